"""The Dask executor on a real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1.

The cluster is started and stopped here. Each worker has a corpus cache of
its own, so the corpus reaches it only through the run, as on machines that
share no disk. Every process of the cluster (scheduler, workers, their fork
servers, candidates) carries this cluster's directory in its environment,
which is how the tests find them among the machine's other processes and
check that none is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SEED_SCRIPT, finish_times, live_processes, resume_redoing_nothing

distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed: pip install -e '.[dask]'")

from evocode.data import corpus_of, load_corpus, shipped_directory  # noqa: E402
from evocode.evaluation.runner import Limits  # noqa: E402
from evocode.executors import dask as dask_executor  # noqa: E402
from evocode.executors.dask import DaskCluster, WorkerRefused  # noqa: E402
from evocode.executors.local import Job  # noqa: E402
from evocode.store import RunStore  # noqa: E402

TINY = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "1", "--seeds", "1",
        "--workers", "2", "--device", "cpu", "--timeout", "120", "--seed", "0", "--no-progress"]
MARK = "EVOCODE_TEST_CLUSTER"


class Cluster:
    """A scheduler and named single-threaded workers, each a real `dask` process started here."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file = directory / "scheduler.json"
        self.scheduler = self._start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(self.file)], "scheduler")
        self.workers: dict[str, subprocess.Popen] = {}

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        env = {**os.environ, MARK: str(self.directory), "PYTHONPATH": str(REPO),
               "EVOCODE_CACHE": str(self.directory / name / "cache")}
        (self.directory / name).mkdir(parents=True, exist_ok=True)
        with open(self.directory / name / "log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env, stdout=log, stderr=log, cwd=self.directory)

    def top_up(self, count: int = 2) -> None:
        """Start workers until `count` are alive and the scheduler has them all."""
        for name in [n for n, p in self.workers.items() if p.poll() is not None]:
            del self.workers[name]
        while len(self.workers) < count:
            name = f"worker{len(list(self.directory.glob('worker*')))}"
            self.workers[name] = self._start(["worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--no-nanny",
                                              "--host", "127.0.0.1", "--name", name], name)
        with distributed.Client(scheduler_file=str(self.file), timeout=60) as client:
            client.wait_for_workers(count, timeout=120)
            deadline = time.time() + 60
            while len(client.scheduler_info(n_workers=-1)["workers"]) != count and time.time() < deadline:
                time.sleep(0.2)  # a killed worker may still be listed for a moment

    def processes(self) -> list[int]:
        """Every live process of this cluster: scheduler, workers, fork servers, candidates."""
        mark = f"{MARK}={self.directory}".encode()
        found = []
        for pid in live_processes():
            try:
                if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def candidates(self) -> dict[int, tuple[int, str]]:
        """Running candidates by pid, each with its fork server's pid and its worker's name (a candidate is a fork of a fork server)."""
        parents = live_processes()
        by_pid = {p.pid: name for name, p in self.workers.items()}
        return {pid: (parents[pid], by_pid[parents[parents[pid]]]) for pid in self.processes()
                if parents.get(pid) in parents and parents[parents[pid]] in by_pid}

    def stop(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            process.terminate()
        for process in [*self.workers.values(), self.scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition, within_s: float, what: str):
    """The condition's first true value."""
    deadline = time.time() + within_s
    while not (value := condition()):
        assert time.time() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
    finally:
        started.stop()
        wait_until(lambda: started.processes() == [], 30, "every process of the cluster is gone")


@pytest.fixture
def two_workers(cluster) -> Cluster:
    cluster.top_up(2)
    return cluster


def evolve(run_dir: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), *TINY, "--run-dir", str(run_dir), *options],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finished(driver: subprocess.Popen) -> str:
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    return out


def history(run_dir: Path) -> list[tuple]:
    """Every evaluation, re-evaluations included: what was evaluated and what it scored."""
    with RunStore.reader(run_dir) as store:
        return [(e.candidate.id, e.candidate.code_hash, e.result.status, e.result.val_bpb,
                 tuple((r.seed, r.val_bpb) for r in e.reevaluations)) for e in store.evaluated()]


def evaluated_once(run_dir: Path) -> bool:
    """The store holds one evaluation per candidate and one result per planned re-evaluation."""
    with sqlite3.connect(run_dir / "evocode.db") as db:
        twice = db.execute("SELECT candidate_id FROM evaluations GROUP BY candidate_id HAVING count(*) > 1").fetchall()
        again = db.execute("SELECT candidate_id FROM reevaluations GROUP BY candidate_id, eval_seed, budget HAVING count(*) > 1").fetchall()
    return twice == [] and again == []


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The same tiny run on this machine's own workers: what every run on the cluster must equal."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    finished(evolve(run_dir, "--executor", "local"))
    return run_dir


def test_a_run_on_the_cluster_evaluates_the_same_candidates_with_the_same_scores_as_locally(local_run, two_workers, tmp_path):
    finished(evolve(tmp_path / "run", "--executor", "dask", "--scheduler-file", str(two_workers.file)))
    assert history(tmp_path / "run") == history(local_run)
    assert (tmp_path / "run" / "best.py").read_text() == (local_run / "best.py").read_text()


def test_the_corpus_reaches_workers_that_do_not_share_the_drivers_disk(two_workers, tiny_spec, seed_source, monkeypatch):
    with DaskCluster(scheduler_file=str(two_workers.file)) as cluster:
        ((_, result),) = cluster.evaluate_many([Job("seed", seed_source, 0, tiny_spec)], Limits(timeout_s=60))
    fingerprint = corpus_of(tiny_spec.corpus_dir).fingerprint
    assert result.status == "ok" and result.corpus == fingerprint
    for name in two_workers.workers:  # every worker, not only the one that ran the job
        monkeypatch.setenv("EVOCODE_CACHE", str(two_workers.directory / name / "cache"))
        assert load_corpus(shipped_directory(fingerprint)).fingerprint == fingerprint


def test_a_worker_killed_mid_candidate_costs_one_rerun_and_nothing_is_evaluated_twice(local_run, two_workers, tmp_path):
    run_dir = tmp_path / "run"
    driver = evolve(run_dir, "--scheduler", json.loads(two_workers.file.read_text())["address"])
    running = wait_until(lambda: len(finish_times(run_dir)) >= 2 and two_workers.candidates(), 120, "a candidate runs after the seed's")
    candidate, (server, name) = next(iter(running.items()))
    lost = [candidate, server]
    os.kill(two_workers.workers[name].pid, signal.SIGKILL)
    two_workers.workers[name].wait()

    finished(driver)
    assert evaluated_once(run_dir)
    # The candidate on the lost worker ran again on the other one: the run ends as the uninterrupted run does.
    assert history(run_dir) == history(local_run)
    assert not [pid for pid in lost if pid in live_processes()], "the lost worker's fork server or candidate lives on"


def test_a_killed_driver_leaves_nothing_training_and_resumes_on_the_cluster_to_the_same_result(local_run, two_workers, tmp_path):
    run_dir = tmp_path / "run"
    driver = evolve(run_dir, "--executor", "dask", "--scheduler-file", str(two_workers.file))
    wait_until(lambda: len(finish_times(run_dir)) >= 3 and two_workers.candidates(), 120, "candidates run mid-run")
    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate()
    wait_until(lambda: not two_workers.candidates(), 15, "the candidates of the killed driver stop")
    before = finish_times(run_dir)
    assert 3 <= len(before) < len(finish_times(local_run)), "the kill did not land mid-run"

    resume_redoing_nothing(run_dir, before)
    assert evaluated_once(run_dir)
    assert history(run_dir) == history(local_run)


def test_a_lost_scheduler_stops_the_run_with_one_line_and_resume_continues_on_a_new_cluster(local_run, tmp_path):
    run_dir = tmp_path / "run"
    first = Cluster(tmp_path / "first")
    try:
        first.top_up(2)
        driver = evolve(run_dir, "--scheduler-file", str(first.file))
        wait_until(lambda: len(finish_times(run_dir)) >= 3 and first.candidates(), 120, "candidates run mid-run")
        first.scheduler.kill()
        _, err = driver.communicate(timeout=120)
        assert driver.returncode == 2
        assert err.splitlines()[1:] == [f"evocode: lost the Dask scheduler at the scheduler file {first.file} (FutureCancelledError); "
                                        "start it again and continue with `python -m evocode resume RUNDIR --scheduler ADDRESS`"]
        # The workers close with their scheduler, and stop their candidates.
        wait_until(lambda: first.processes() == [], 30, "the workers of the lost scheduler and their candidates are gone")
    finally:
        first.stop()

    second = Cluster(tmp_path / "second")
    try:
        second.top_up(2)
        address = json.loads(second.file.read_text())["address"]
        resumed = subprocess.run([sys.executable, "-m", "evocode", "resume", str(run_dir), "--scheduler", address, "--no-progress"],
                                 cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        second.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert evaluated_once(run_dir)
    assert history(run_dir) == history(local_run)


def test_a_worker_with_other_versions_is_refused_naming_both(two_workers, tiny_spec, seed_source, monkeypatch):
    theirs = dask_executor.versions()
    monkeypatch.setattr(dask_executor, "versions", lambda: {"evocode": "0.0.1", "torch": "1.0.0"})
    with DaskCluster(scheduler_file=str(two_workers.file)) as cluster, pytest.raises(WorkerRefused) as refused:
        list(cluster.evaluate_many([Job("seed", seed_source, 0, tiny_spec)], Limits(timeout_s=60)))
    message = str(refused.value)
    assert f"runs evocode {theirs['evocode']}, torch {theirs['torch']}, the driver evocode 0.0.1, torch 1.0.0" in message
    assert len(message.splitlines()) == 1


# Kills the Dask worker that runs it: its nearest ancestor started as `python -m dask worker`.
KILL_WORKER = """
import os, signal
pid = os.getppid()
while b"dask" not in open(f"/proc/{pid}/cmdline", "rb").read():
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
os.kill(pid, signal.SIGKILL)
"""


def test_a_candidate_that_kills_every_worker_it_runs_on_is_a_crash_after_one_retry(cluster, tiny_spec, seed_source):
    cluster.top_up(3)
    jobs = [Job("killer", KILL_WORKER, 0, tiny_spec), Job("innocent", seed_source, 0, tiny_spec)]
    # Unsandboxed: where Landlock scopes signals a candidate cannot reach its worker at all; this is about when it can.
    # Cold: each attempt on a fresh worker would otherwise start its fork server first (seconds of importing torch).
    with DaskCluster(scheduler_file=str(cluster.file), cold=True) as on_cluster:
        by_key = dict(on_cluster.evaluate_many(jobs, Limits(timeout_s=60, sandbox=False)))
    assert by_key["innocent"].status == "ok"
    assert by_key["killer"].status == "crash"
    assert by_key["killer"].reason.startswith("killed its evaluation worker: Dask workers tcp://127.0.0.1:")
    assert sum(p.poll() is not None for p in cluster.workers.values()) == 2, "the killer ran on a third worker"
