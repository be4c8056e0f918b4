"""Distill's evaluations: one table of the run store, keyed by (code hash, seed, budget, corpus).

Distilling a winner retrains many programs on fresh seeds and larger
budgets; each result is committed the moment it arrives, under the key of
what was measured, so a distill that is killed and run again evaluates only
what is missing, and the same program measured twice under the same terms
(the seed program as "leave-one-out" of a one-edit set and as the baseline)
is trained once. The corpus is part of the key because a transfer check may
train on another corpus at the same budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from evocode.data import corpus_of
from evocode.evaluation.runner import EvalResult, Limits
from evocode.executors.local import Job, Slots, evaluate_many
from evocode.genome import code_hash
from evocode.spec import EvalSpec
from evocode.store import RunStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS distill_evaluations (
    code_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    corpus TEXT NOT NULL,
    status TEXT NOT NULL,
    val_bpb REAL,
    code TEXT NOT NULL,
    result TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (code_hash, seed, budget, corpus)
);
"""


@dataclass(frozen=True)
class Condition:
    """The terms a program is measured under, less the seed: the spec (budget, corpus) and the limits."""

    spec: EvalSpec
    limits: Limits

    @property
    def corpus(self) -> str:
        return corpus_of(self.spec.corpus_dir).fingerprint


Key = tuple[str, int, int, str]  # (code hash, evaluation seed, budget, corpus fingerprint)


def key_of(code: str, seed: int, condition: Condition) -> Key:
    return code_hash(code), seed, condition.spec.budget, condition.corpus


class Measurements:
    """The distill table of one run store: what is measured already, and measuring what is not."""

    def __init__(self, store: RunStore, slots: Slots, on_result: Callable[[EvalResult], None] = lambda _: None) -> None:
        self.db = store.db
        self.db.executescript(_SCHEMA)
        self.slots = slots
        self.on_result = on_result
        self.trained = 0  # evaluations this object ran (the rest came from the store)

    def get(self, code: str, seed: int, condition: Condition) -> EvalResult | None:
        row = self.db.execute(
            "SELECT result FROM distill_evaluations WHERE code_hash = ? AND seed = ? AND budget = ? AND corpus = ?",
            key_of(code, seed, condition),
        ).fetchone()
        return None if row is None else EvalResult.from_dict(json.loads(row[0]))

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM distill_evaluations").fetchone()[0]

    def measure(self, codes: Iterable[str], seeds: Iterable[int], condition: Condition) -> None:
        """Evaluate every (program, seed) pair under the condition that the table does not hold yet, in parallel."""
        seeds = list(seeds)
        pending: dict[str, tuple[str, int]] = {}
        for code in codes:
            for seed in seeds:
                if self.get(code, seed, condition) is None:
                    pending["/".join(map(str, key_of(code, seed, condition)))] = (code, seed)
        jobs = [Job(key, code, seed, condition.spec) for key, (code, seed) in pending.items()]
        for key, result in evaluate_many(jobs, condition.limits, self.slots):
            code, seed = pending[key]
            self.db.execute(
                "INSERT INTO distill_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key_of(code, seed, condition), result.status, result.val_bpb, code, json.dumps(result.as_dict()), time.time()),
            )
            self.trained += 1
            self.on_result(result)
