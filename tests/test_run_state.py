"""What a run directory says about itself (running, interrupted or finished, any candidate on demand),
and what it refuses: a resume under code other than the code it started with.

The runs are real drivers (subprocesses) at a budget of two optimizer steps;
a killed run is killed with SIGKILL, so it leaves no chance to clean up.
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

from conftest import REPO, SEED_SCRIPT
from evocode.store import RunStore

TINY = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "3", "--workers", "2", "--device", "cpu"]


def evocode(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evocode", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def start_driver(run_dir: Path, *extra: str, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), *TINY, "--run-dir", str(run_dir), "--no-progress", *extra],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_for_results(run_dir: Path, count: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with RunStore.reader(run_dir) as store:
                if len(store.finish_times()) >= count:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} did not reach {count} results")


def state_line(run_dir: Path) -> str:
    done = evocode("status", str(run_dir))
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("state:")).split(None, 1)[1]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run whose driver was SIGKILLed after three results (the seed on two seeds, a mutant), while it still had work to do."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    driver = start_driver(run_dir)
    wait_for_results(run_dir, 3)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    return run_dir


def test_status_of_a_live_run_says_running_with_the_driver_pid(tmp_path):
    driver = start_driver(tmp_path / "run")
    try:
        wait_for_results(tmp_path / "run", 1)
        assert state_line(tmp_path / "run") == f"running (driver pid {driver.pid})"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def test_status_of_a_killed_run_says_interrupted_and_how_to_resume(killed_run):
    assert state_line(killed_run) == f"interrupted (resume with `python -m evocode resume {killed_run}`)"


def test_status_json_parses_and_counts_planned_and_done_evaluations(killed_run):
    done = evocode("status", str(killed_run), "--json")
    status = json.loads(done.stdout)
    with RunStore.reader(killed_run) as store:
        evaluated = len(store.evaluated())
    assert (status["state"], status["planned"], status["evaluations"]) == ("interrupted", 4 + 3 * 2, evaluated)
    assert status["best"]["id"].startswith("g000-") and status["driver_pid"] is None


def test_runs_lists_each_run_with_its_state_and_progress(killed_run):
    done = evocode("runs", str(killed_run.parent))
    header, row = done.stdout.splitlines()
    assert header.split() == ["run", "state", "seed", "best", "gain", "evals", "last", "activity"]
    with RunStore.reader(killed_run) as store:
        evaluated = len(store.evaluated())
    assert row.split()[:3] == ["run", "interrupted", "train.py"] and f"{evaluated}/10" in row.split()


def test_show_prints_a_candidates_edits_and_its_diff_against_the_seed(killed_run):
    with RunStore.reader(killed_run) as store:
        # A first-generation child of the seed: a mutant or a model proposal, whichever the run's draws made first.
        mutant = next(e.candidate for e in store.evaluated() if e.candidate.origin in ("mutation", "model"))
    done = evocode("show", str(killed_run), mutant.id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# {mutant.id}: ") and f"# {mutant.origin} of g000-000, generation 0\n" in done.stdout
    assert all(description in done.stdout for description in mutant.description.split("; "))
    assert f"\n--- a/train.py\n+++ b/{mutant.id}.py\n" in done.stdout


def test_show_of_an_unknown_candidate_is_one_line_naming_it(killed_run):
    done = evocode("show", str(killed_run), "g042-000")
    assert done.returncode == 2 and done.stderr.startswith("evocode: no candidate 'g042-000'")
    assert len(done.stderr.splitlines()) == 1


WIDER_MLP = """
from evocode.mutation import Mutator


class WiderMLP(Mutator):
    \"\"\"A wider MLP stores more per layer: raise MLP_RATIO by a half.\"\"\"

    name = "wider_mlp"
    category = "architecture"

    def propose(self, program, rng):
        ratio = program.value("MLP_RATIO")
        if not isinstance(ratio, int):
            return None
        return self.edit("MLP_RATIO", str(ratio + max(1, ratio // 2)), "wider MLP")
"""


def test_a_resume_after_a_plugin_was_edited_is_refused_naming_it_and_forced_it_goes_on_on_record(tmp_path):
    plugin = tmp_path / "my_mutators.py"
    plugin.write_text(WIDER_MLP)
    run_dir = tmp_path / "run"
    # Started from the plugin's directory with a relative path; resumed below from the repository.
    driver = start_driver(run_dir, "--mutators", "builtin", "my_mutators.py:WiderMLP", "--population", "3",
                          "--generations", "1", cwd=tmp_path)
    wait_for_results(run_dir, 2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    plugin.write_text(WIDER_MLP + "# edited after the run started\n")

    refused = evocode("resume", str(run_dir), "--no-progress")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(f"evocode: {run_dir} was started under another installation "
                                                      f"(mutator wider_mlp's code changed ({plugin})); ")
    assert "Traceback" not in refused.stderr

    forced = evocode("resume", str(run_dir), "--no-progress", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "\nstate:            finished\n" in forced.stdout
    with RunStore.reader(run_dir) as store:
        (record,) = store.get("forced")
        assert record["differences"] == [f"mutator wider_mlp's code changed ({plugin})"]
        assert len(store.evaluated()) == 3 + 1


def test_runs_lists_a_run_it_cannot_read_instead_of_failing(tmp_path):
    """A run made by another evocode version (settings this one does not know) is one row, not a traceback."""
    with RunStore(tmp_path / "foreign") as store:
        store.put("settings", {"config": {"a_future_option": 1}})
    done = subprocess.run([sys.executable, "-m", "evocode", "runs", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "foreign" in done.stdout and "unreadable" in done.stdout


def test_status_read_by_a_reader_that_stopped_reading_ends_without_a_traceback(finished_run):
    """`status RUN | head -1`: the pipe is closed under the CLI (here before it writes at all); it leaves quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        status = subprocess.run([sys.executable, "-m", "evocode", "status", str(finished_run)], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                timeout=120)
    finally:
        os.close(write_end)
    assert status.returncode == 1
    assert status.stderr == ""
