"""Evaluating many candidates at once, behind one small interface.

The loop hands over (candidate id, code) jobs and consumes (id, result) pairs
as they complete. joblib runs them here, in worker processes; its backend is
named by a string, so a cluster backend plugs in without touching the loop.
A job never raises for what its program does (evaluate turns that into a
status). Jobs always run in worker processes, never in the driver (one
worker included), so a candidate that kills its parent takes down a
worker, not the run. A lost worker breaks the pool and takes the jobs in
flight with it: those are run again one at a time, so the candidate that
killed its worker is singled out and recorded as a crash, and the rest go
back to the pool. Any other error is the runner's own fault (a full disk, a
vanished corpus): it propagates, so nothing false is recorded and `resume`
picks up from there.
"""

from __future__ import annotations

import os
from concurrent.futures import BrokenExecutor
from typing import Iterable, Iterator

from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from evocode.evaluate import EvalResult, Limits, evaluate
from evocode.spec import EvalSpec


def evaluate_many(
    jobs: Iterable[tuple[str, str]],
    spec: EvalSpec,
    seed: int,
    limits: Limits,
    workers: int,
    backend: str = "loky",
) -> Iterator[tuple[str, EvalResult]]:
    """Yield (candidate id, result) for every job, in the order they finish."""
    pending = dict(jobs)
    driver = os.getpid()
    while pending:
        if workers == 1:  # joblib would run a single worker's jobs inside the driver
            candidate_id = next(iter(pending))
            yield candidate_id, _alone(candidate_id, pending.pop(candidate_id), spec, seed, limits, driver)
            continue
        try:
            yield from _pool(pending, spec, seed, limits, workers, backend, driver)
        except BrokenExecutor:
            # joblib dispatches at most 2 × workers jobs ahead: the jobs in flight are among the first that many.
            for candidate_id in list(pending)[: 2 * workers]:
                yield candidate_id, _alone(candidate_id, pending.pop(candidate_id), spec, seed, limits, driver)


def _pool(pending: dict[str, str], spec, seed, limits, workers, backend, driver):
    """Run the pending jobs, removing each from `pending` as its result arrives."""
    results = Parallel(n_jobs=workers, backend=backend, return_as="generator_unordered")(
        delayed(_job)(cid, code, spec, seed, limits, driver) for cid, code in list(pending.items())
    )
    for candidate_id, result in results:
        del pending[candidate_id]
        yield candidate_id, result


def _alone(candidate_id: str, code: str, spec: EvalSpec, seed: int, limits: Limits, driver: int) -> EvalResult:
    """One job in a worker process of its own, so a lost worker names its culprit."""
    try:
        return get_reusable_executor(max_workers=1).submit(_job, candidate_id, code, spec, seed, limits, driver).result()[1]
    except BrokenExecutor as error:
        reason = f"killed its evaluation worker: {(str(error) or type(error).__name__).splitlines()[0]}"
        return EvalResult(status="crash", reason=reason, budget=spec.budget, seed=seed)


def _job(candidate_id: str, code: str, spec: EvalSpec, seed: int, limits: Limits, driver: int) -> tuple[str, EvalResult]:
    return candidate_id, evaluate(code, spec, seed, limits, driver_pid=driver)
