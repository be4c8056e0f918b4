"""Evaluating many candidates at once on this machine: a fixed set of slots, one evaluation per slot.

The loop hands over jobs and consumes (key, result) pairs as they complete.
Each slot is a loky worker process (joblib's reusable executor); on a GPU
machine slot i is bound to one GPU, and the candidate it runs sees only that
GPU (`CUDA_VISIBLE_DEVICES`), so N GPUs with K slots each run N × K
candidates. A job is submitted only when a slot is free, so the slot, and
with it the GPU, is known when the job starts.

A job never raises for what its program does (evaluate turns that into a
status). Jobs always run in worker processes, never in the driver (one
worker included), so a candidate that kills its parent takes down a worker,
not the run. A lost worker breaks the pool and takes the jobs in flight
with it: those are run again one at a time, so the candidate that killed its
worker is singled out and recorded as a crash, and the rest complete. Any
other error is the runner's own fault (a full disk, a vanished corpus): it
propagates, so nothing false is recorded and `resume` picks up from there.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass
from typing import Iterable, Iterator

from joblib.externals.loky import get_reusable_executor

from evocode.evaluation.process import parent_watch
from evocode.evaluation.runner import EvalResult, Limits, evaluate
from evocode.spec import EvalSpec


@dataclass(frozen=True)
class Job:
    """One evaluation: `key` names its result (a candidate id, or a candidate id and a seed)."""

    key: str
    code: str
    seed: int
    spec: EvalSpec


# Unmeasured: this project has not yet had a GPU to choose it on (see README, "GPUs").
DEFAULT_PER_GPU = 2


@dataclass(frozen=True)
class Slots:
    """Where evaluations run at once: `workers` slots, or `per_gpu` slots on each of `gpus`.

    cold: start each candidate as a new Python process instead of forking it
    from the slot's warm fork server (same scores, seconds slower each).
    """

    workers: int = 1
    gpus: tuple[str, ...] = ()
    per_gpu: int = 1
    cold: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1 or self.per_gpu < 1:
            raise ValueError(f"--workers and --per-gpu must be at least 1, got {self.workers} and {self.per_gpu}")

    @property
    def count(self) -> int:
        """How many candidates run at once."""
        return len(self.gpus) * self.per_gpu if self.gpus else self.workers

    @property
    def threads(self) -> int:
        """CPU threads each candidate may use: the cores shared evenly between the slots."""
        return max(1, (os.cpu_count() or 1) // self.count)

    def env(self, slot: int) -> dict[str, str]:
        """What a candidate in this slot sees of the machine's GPUs."""
        return {"CUDA_VISIBLE_DEVICES": self.gpus[slot // self.per_gpu]} if self.gpus else {}


def evaluate_many(jobs: Iterable[Job], limits: Limits, slots: Slots) -> Iterator[tuple[str, EvalResult]]:
    """Yield (job key, result) for every job, in the order they finish.

    jobs given as a deque are drawn from as a slot frees, so what the caller adds to it (or reorders) between
    results is run too (evocode.executors.stream: one queue for a whole run).
    """
    queue = jobs if isinstance(jobs, deque) else deque(jobs)
    driver = os.getpid()
    free = list(range(slots.count))
    running: dict[Future, tuple[Job, int]] = {}
    pool = None

    def fill() -> None:
        nonlocal pool
        if not running:
            # The shared pool as it is now: a lost worker broke it, here or in another call between a stream's results.
            pool = get_reusable_executor(max_workers=slots.count)
        while queue and free:
            job, slot = queue.popleft(), free.pop(0)
            running[pool.submit(_job, job, limits, driver, slots.env(slot), slots.cold)] = (job, slot)

    while queue or running:
        fill()
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        lost: list[tuple[Job, int]] = []
        finished: list[tuple[str, Future]] = []
        for future in done:
            job, slot = running.pop(future)
            if isinstance(future.exception(), BrokenExecutor):
                lost.append((job, slot))
            else:
                finished.append((job.key, future))
                free.append(slot)
        if not lost:
            fill()  # before the driver records the results: a slot must not wait on the driver's bookkeeping
        for key, future in finished:
            yield key, future.result()  # the runner's own error propagates here, after the results before it
        if lost:
            # The pool is broken: every job still in flight on it is lost too.
            wait(running)
            for future, (job, slot) in list(running.items()):
                try:
                    yield job.key, future.result()
                except BrokenExecutor:
                    lost.append((job, slot))
            running.clear()
            for job, slot in lost:
                yield job.key, _alone(job, limits, driver, slots.env(slot), slots.cold)
            free = list(range(slots.count))


def _alone(job: Job, limits: Limits, driver: int, env: dict[str, str], cold: bool) -> EvalResult:
    """One job in a worker process of its own, so a lost worker names its culprit."""
    try:
        return get_reusable_executor(max_workers=1).submit(_job, job, limits, driver, env, cold).result()
    except BrokenExecutor as error:
        reason = f"killed its evaluation worker: {(str(error) or type(error).__name__).splitlines()[0]}"
        return EvalResult(status="crash", reason=reason, budget=job.spec.budget, seed=job.seed)


def _job(job: Job, limits: Limits, driver: int, env: dict[str, str], cold: bool) -> EvalResult:
    return evaluate(job.code, job.spec, job.seed, limits, driver_gone=parent_watch(driver), env=env, warm=not cold)
