"""A run's queue of evaluations: jobs are added as the loop decides them, and a slot that frees takes the first
one queued, without waiting for the rest of a phase.

Why one queue, not one executor call per phase: a call ends with its slowest
evaluation, and while that one runs the other slots have nothing to do. With
the next generation's first children already queued behind the current
generation's (evocode.evolve breeds them a generation early), a freed slot
takes one of those instead. Queued jobs wait in the order of their rank (the
loop ranks by the generation whose selection waits for them, then the
longest expected first); the loop waits only for the keys it needs, and the
result of every job is committed as it arrives, whichever key it is.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from evocode.evaluation.runner import EvalResult, Limits
from evocode.executors import EvaluateMany
from evocode.executors.local import Job

Commit = Callable[[EvalResult], None]


class Stream:
    """One executor call kept open while the loop feeds it; every job runs under the same limits."""

    def __init__(self, evaluate_many: EvaluateMany, limits: Limits) -> None:
        self._queue: deque[Job] = deque()
        self._rank: dict[str, tuple] = {}
        self._commit: dict[str, Commit] = {}
        self._results = evaluate_many(self._queue, limits)

    def add(self, jobs: Iterable[tuple[Job, tuple, Commit]]) -> set[str]:
        """Queue each (job, rank, commit) whose key is not queued or running yet (a queued one takes the new rank);
        returns every given key, to wait for."""
        keys = set()
        for job, rank, commit in jobs:
            keys.add(job.key)
            if job.key not in self._commit:
                self._queue.append(job)
                self._commit[job.key] = commit
            self._rank[job.key] = rank
        ordered = sorted(self._queue, key=lambda job: self._rank[job.key])
        self._queue.clear()
        self._queue.extend(ordered)
        return keys

    def wait_for(self, keys: Iterable[str]) -> None:
        """Commit results as they arrive until those of keys are all in (keys not queued are taken as in)."""
        outstanding = {key for key in keys if key in self._commit}
        while outstanding:
            try:
                key, result = next(self._results)
            except StopIteration:
                raise RuntimeError(f"the executor stopped with {len(outstanding)} job(s) unfinished") from None
            del self._rank[key]
            self._commit.pop(key)(result)
            outstanding.discard(key)
