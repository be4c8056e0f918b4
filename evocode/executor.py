"""Evaluating many candidates at once, behind one small interface.

The loop hands over (candidate id, code) jobs and consumes (id, result) pairs
as they complete. joblib runs them here, in worker processes; its backend is
named by a string, so a cluster backend plugs in without touching the loop.
A job never raises (evaluate turns every failure of the program into a
status), and a worker lost for any other reason becomes a failed record for
the jobs it held, not a stuck or aborted run.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from joblib import Parallel, delayed

from evocode.evaluate import EvalResult, Limits, evaluate
from evocode.spec import EvalSpec


def _job(candidate_id: str, code: str, spec: EvalSpec, seed: int, limits: Limits) -> tuple[str, EvalResult]:
    try:
        return candidate_id, evaluate(code, spec, seed, limits)
    except Exception as error:  # a fault of the runner itself must not abort the other evaluations
        return candidate_id, EvalResult(status="crash", reason=f"evaluation failed in the worker: {error!r}", budget=spec.budget, seed=seed)


def evaluate_many(
    jobs: Iterable[tuple[str, str]],
    spec: EvalSpec,
    seed: int,
    limits: Limits,
    workers: int,
    backend: str = "loky",
) -> Iterator[tuple[str, EvalResult]]:
    """Yield (candidate id, result) for every job, in the order they finish."""
    jobs = list(jobs)
    if not jobs:
        return
    done = set()
    results = Parallel(n_jobs=workers, backend=backend, return_as="generator_unordered")(
        delayed(_job)(cid, code, spec, seed, limits) for cid, code in jobs
    )
    while True:
        try:
            candidate_id, result = next(results)
        except StopIteration:
            return
        except Exception as error:
            reason = f"evaluation worker lost: {type(error).__name__}: {error}".splitlines()[0]
            for cid, _ in jobs:
                if cid not in done:
                    yield cid, EvalResult(status="crash", reason=reason, budget=spec.budget, seed=seed)
            return
        done.add(candidate_id)
        yield candidate_id, result
