"""Parallel evaluation: every job gets exactly one result, even when a candidate kills its worker."""

from __future__ import annotations

from conftest import candidates_alive
from evocode.evaluate import Limits
from evocode.executor import evaluate_many

KILL_WORKER = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"


def test_each_job_gets_one_result(seed_source, tiny_spec, limits):
    jobs = [("a", seed_source), ("b", "print('no training')\n"), ("c", "def broken(:\n")]
    results = dict(evaluate_many(jobs, tiny_spec, 0, limits, workers=2))
    assert sorted(results) == ["a", "b", "c"]
    assert [results[k].status for k in "abc"] == ["ok", "crash", "invalid"]


def test_a_candidate_that_kills_its_worker_is_a_crash_and_the_others_complete(seed_source, tiny_spec):
    jobs = [("killer", KILL_WORKER), ("innocent", seed_source)]
    results = list(evaluate_many(jobs, tiny_spec, 0, Limits(timeout_s=60), workers=2))
    assert sorted(cid for cid, _ in results) == ["innocent", "killer"]
    by_id = dict(results)
    assert by_id["killer"].status == "crash"
    assert by_id["killer"].reason.startswith("killed its evaluation worker")
    assert by_id["innocent"].status == "ok"
    assert candidates_alive() == []


def test_with_one_worker_jobs_still_run_outside_the_driver(seed_source, tiny_spec):
    """joblib would run one worker's jobs in the calling process, where a parent-killer would kill the run."""
    jobs = [("killer", KILL_WORKER), ("innocent", seed_source)]
    by_id = dict(evaluate_many(jobs, tiny_spec, 0, Limits(timeout_s=60), workers=1))
    assert by_id["killer"].status == "crash"
    assert by_id["innocent"].status == "ok"
