"""Mutators of what the model sees per optimizer step: batch size and sequence length."""

from __future__ import annotations

import numpy as np

from evocode.genome import Edit
from evocode.mutation import FOLLOW, Mutator, Step, pick
from evocode.program import Program
from evocode.spec import DEFAULT_CONTEXT_LENGTH
from mutators.constants import matching_constants

BATCH = r"^BATCH_SIZE$"
SEQUENCE = r"^(SEQ_LEN|SEQUENCE_LENGTH|BLOCK_SIZE)$"


class BatchSize(Mutator):
    """At a fixed token budget, a smaller batch means more, noisier steps and a larger one fewer, cleaner steps:
    halving or doubling the batch tests which the script is short of. Where a direction is advised (its
    ``steps``), it usually goes that way."""

    name = "batch_size"
    category = "data"

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        sites = matching_constants(program, BATCH, int)
        if not sites:
            return None
        name, value = sites[0]
        options = [v for v in (value // 2, value * 2) if v >= 1 and v != value]
        direction = self.steps.get(name, Step()).direction
        onward = [v for v in options if (v - value) * direction > 0]
        new = pick(rng, onward if onward and rng.random() < FOLLOW else options)
        return self.edit(name, str(new), f"{name} {value} → {new}")


class BatchVsSeqLen(Mutator):
    """Tokens per step held constant, shorter sequences with more rows give more independent contexts per step
    while longer ones teach longer dependencies: trading one for the other tests which the model needs.
    Sequences never exceed the harness's context length."""

    name = "batch_vs_seq_len"
    category = "data"
    max_seq_len = DEFAULT_CONTEXT_LENGTH

    def propose(self, program: Program, rng: np.random.Generator) -> Edit | None:
        batches, sequences = matching_constants(program, BATCH, int), matching_constants(program, SEQUENCE, int)
        if not batches or not sequences:
            return None
        (batch_name, batch), (seq_name, seq) = batches[0], sequences[0]
        options = [
            (batch * seq // new_seq, new_seq)
            for new_seq in (seq // 2, seq * 2)
            if 1 <= new_seq <= self.max_seq_len and new_seq != seq and (batch * seq) % new_seq == 0
        ]
        if not options:
            return None
        new_batch, new_seq = pick(rng, options)
        return self.edit(
            f"({batch_name}, {seq_name})",
            f"{new_batch}, {new_seq}",
            f"{batch_name}×{seq_name} {batch}×{seq} → {new_batch}×{new_seq} (same tokens per step)",
        )
