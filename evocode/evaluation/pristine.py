"""The functions the harness measures with, captured before any candidate code can replace them.

The fork server imports this module, so in a warm worker these are the
functions as torch and Python define them, whatever a candidate assigns to
`torch.log_softmax` or `torch.Tensor.gather` before it imports the harness.
Cold, the module is first imported by the harness itself, after the
candidate's own first lines: the known limit of the cold path.
"""

import time

import torch

log_softmax = torch.log_softmax
gather = torch.Tensor.gather
allclose = torch.allclose
isfinite = torch.isfinite
perf_counter = time.perf_counter
