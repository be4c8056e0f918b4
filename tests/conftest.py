"""Shared fixtures: a tiny but real measurement, and the seed script to derive variants from."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from evocode.data import prepare_corpus
from evocode.evaluation.runner import Limits
from evocode.spec import EvalSpec
from evocode.store import RunStore

REPO = Path(__file__).resolve().parent.parent
SEED_SCRIPT = REPO / "seeds" / "train.py"


@pytest.fixture(scope="session")
def tiny_spec() -> EvalSpec:
    """Two optimizer steps of the seed model and eight validation windows: seconds, not minutes."""
    corpus = prepare_corpus()
    return EvalSpec(budget=4096, context_length=128, eval_tokens=1024, corpus_dir=str(corpus.directory), device="cpu")


@pytest.fixture(scope="session")
def limits() -> Limits:
    return Limits(timeout_s=120, memory_mb=4096, threads=1)


@pytest.fixture(scope="session")
def seed_source() -> str:
    return SEED_SCRIPT.read_text()


def children_alive() -> list[int]:
    """Processes (not zombies) whose parent is this test process: a candidate left behind would show here."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z":
            found.append(int(entry.name))
    return found


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session", autouse=True)
def own_temp_root(tmp_path_factory):
    """Candidates of this test session get their working directories here, so leftovers can be told apart."""
    root = tmp_path_factory.mktemp("tmp")
    previous = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(root), str(root)
    yield root
    if previous[0] is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = previous[0]
    tempfile.tempdir = previous[1]


def candidates_alive() -> list[int]:
    """Running candidate programs of this test session (the runner names each one candidate.py)."""
    root = os.fsencode(tempfile.gettempdir())
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(root) and arg.endswith(b"/candidate.py") for arg in argv) and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def finish_times(run_dir: Path) -> dict[str, float]:
    """When each finished evaluation of the run was committed (re-evaluations included); empty before the store exists."""
    try:
        with RunStore.reader(run_dir) as store:
            return store.finish_times()
    except sqlite3.Error:
        return {}


def sigkill_driver(driver: subprocess.Popen) -> None:
    """Kill the driver alone, as a crash would: its workers must notice and stop their candidates."""
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 15
    while candidates_alive() and time.time() < deadline:
        time.sleep(0.2)
    assert candidates_alive() == [], "candidates kept training after their driver died"


def resume_redoing_nothing(run_dir: Path, before: dict[str, float]) -> None:
    """`evocode resume` finishes the run, and every evaluation finished before it was kept, not redone."""
    resumed = subprocess.run([sys.executable, "-m", "evocode", "resume", str(run_dir), "--no-progress"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = finish_times(run_dir)
    assert {key: after[key] for key in before} == before, "a completed evaluation was redone"
