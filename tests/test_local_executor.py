"""Parallel evaluation: every job gets exactly one result, even when a candidate kills its worker."""

from __future__ import annotations

from conftest import lingering_candidates
from evocode.evaluation.runner import Limits
from evocode.executors.local import Job, Slots, evaluate_many

# Kills the executor's worker process, its nearest loky ancestor (a warm candidate's parent is a fork server).
KILL_WORKER = """
import os, signal
pid = os.getppid()
while b"loky" not in open(f"/proc/{pid}/cmdline", "rb").read():
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
os.kill(pid, signal.SIGKILL)
"""
# Where Landlock scopes signals a candidate cannot reach its worker at all; these tests are about when it can.
UNSANDBOXED = Limits(timeout_s=60, sandbox=False)


def test_each_job_gets_one_result(seed_source, tiny_spec, limits):
    jobs = [Job("a", seed_source, 0, tiny_spec), Job("b", "print('no training')\n", 0, tiny_spec), Job("c", "def broken(:\n", 0, tiny_spec)]
    results = dict(evaluate_many(jobs, limits, Slots(workers=2)))
    assert sorted(results) == ["a", "b", "c"]
    assert [results[k].status for k in "abc"] == ["ok", "crash", "invalid"]


def test_a_candidate_that_kills_its_worker_is_a_crash_and_the_others_complete(seed_source, tiny_spec):
    jobs = [Job("killer", KILL_WORKER, 0, tiny_spec), Job("innocent", seed_source, 0, tiny_spec)]
    results = list(evaluate_many(jobs, UNSANDBOXED, Slots(workers=2)))
    assert sorted(cid for cid, _ in results) == ["innocent", "killer"]
    by_id = dict(results)
    assert by_id["killer"].status == "crash"
    assert by_id["killer"].reason.startswith("killed its evaluation worker")
    assert by_id["innocent"].status == "ok"
    assert lingering_candidates(within_s=5) == {}


def test_with_one_worker_jobs_still_run_outside_the_driver(seed_source, tiny_spec):
    """joblib would run one worker's jobs in the calling process, where a parent-killer would kill the run."""
    jobs = [Job("killer", KILL_WORKER, 0, tiny_spec), Job("innocent", seed_source, 0, tiny_spec)]
    by_id = dict(evaluate_many(jobs, UNSANDBOXED, Slots(workers=1)))
    assert by_id["killer"].status == "crash"
    assert by_id["innocent"].status == "ok"
