"""What the driver tells a candidate process about the measurement.

The harness inside the candidate and the runner in the driver must agree on
the budget, the corpus and how validation is done; this module is the one
place that says how those travel (environment variables), so neither side
can drift. It imports nothing heavy: the driver never needs torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping

DEFAULT_BUDGET = 400_000
DEFAULT_CONTEXT_LENGTH = 128
DEFAULT_EVAL_TOKENS = 32_768

_PREFIX = "EVOCODE_"


@dataclass(frozen=True)
class EvalSpec:
    """The fixed terms of one measurement, identical for every candidate of a run.

    budget: training tokens a candidate may draw from the harness.
    context_length: longest training sequence, and the length of every
        validation window (so all candidates are scored on the same windows).
    eval_tokens: how many held-out tokens the validation loss averages over.
    corpus_dir: a prepared corpus (see evocode.data); None means the default.
    device: "auto" picks CUDA when present, else CPU.
    split: what the score is measured on: "validation" (what selection sees)
        or "hidden" (the corpus's hidden test split, scored once for a run's
        final best, never to select).
    """

    budget: int = DEFAULT_BUDGET
    context_length: int = DEFAULT_CONTEXT_LENGTH
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    corpus_dir: str | None = None
    device: str = "auto"
    split: str = "validation"

    def __post_init__(self) -> None:
        if self.split not in ("validation", "hidden"):
            raise ValueError(f"the split scored is validation or hidden, got {self.split!r}")
        if self.budget < 1:
            raise ValueError(f"budget must be a positive number of tokens, got {self.budget}")
        if self.context_length < 2:
            raise ValueError(f"context length must be at least 2, got {self.context_length}")
        if self.eval_tokens < self.context_length:
            raise ValueError(
                f"eval_tokens ({self.eval_tokens}) must cover at least one window "
                f"of context_length ({self.context_length})"
            )

    def to_env(self) -> dict[str, str]:
        return {
            _PREFIX + f.name.upper(): str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "EvalSpec":
        values = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = raw if f.type in ("str", "str | None") else int(raw)
        return cls(**values)



CORPUS_DIR_VAR = _PREFIX + "CORPUS_DIR"
SPLIT_VAR = _PREFIX + "SPLIT"
# The candidate's ends of the pipes its training batches come through (evocode.evaluation.feeder):
# it never holds the training split nor the count of what it drew.
FEED_REQUESTS_VAR = _PREFIX + "FEED_REQUESTS"
FEED_REPLIES_VAR = _PREFIX + "FEED_REPLIES"
SEED_VAR = _PREFIX + "SEED"
RESULT_VAR = _PREFIX + "RESULT"
THREADS_VAR = _PREFIX + "THREADS"
