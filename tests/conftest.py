"""Shared fixtures: a tiny but real measurement, and the seed script to derive variants from."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from evocode.data import prepare_corpus
from evocode.evaluation.runner import Limits
from evocode.spec import EvalSpec

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


TINY_RUN = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "1", "--workers", "2", "--device", "cpu"]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One tiny real run made by the command line, shared by the tests that read a finished run (report, export, distill)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run([sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), *TINY_RUN, "--run-dir", str(run_dir), "--no-progress"],
                   cwd=REPO, check=True, capture_output=True, text=True)
    return run_dir


def unfinished_copy(run_dir: Path, destination: Path) -> Path:
    """A copy of a finished run whose last generation is not recorded: the state a run killed mid-generation leaves."""
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("evocode.lock"))
    with sqlite3.connect(destination / "evocode.db") as db:
        db.execute("DELETE FROM generations WHERE number = (SELECT max(number) FROM generations)")
    return destination
