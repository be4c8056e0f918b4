"""Shared fixtures: a tiny but real measurement, and the seed script to derive variants from."""

from __future__ import annotations

import os
import shutil
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


def live_processes() -> dict[int, int]:
    """pid → parent pid of every process that is not a zombie."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
    return parents


def _descendants(roots: list[int], parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, frontier = [], list(roots)
    while frontier:
        for pid in children.get(frontier.pop(), []):
            frontier.append(pid)
            found.append(pid)
    return found


def is_fork_server(pid: int) -> bool:
    return b"evocode.evaluation.forkserver" in _cmdline(pid)


def _tmpdir(pid: int) -> str | None:
    """The process's TMPDIR: each test session has its own, so this tells our fork servers from another session's."""
    try:
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v[len(b"TMPDIR="):].decode() for v in variables if v.startswith(b"TMPDIR=")), None)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children_alive() -> list[str]:
    """Live descendants of this test process other than its workers ("pid command line" each).

    Workers (loky processes and their resource tracker, fork servers) live on between evaluations by
    design; what they run does not.
    """
    return [f"{pid} {_cmdline(pid).replace(bytes(1), b' ').decode(errors='replace')}"
            for pid in _descendants([os.getpid()], live_processes())
            if not is_fork_server(pid) and not any(w in _cmdline(pid) for w in (b"loky", b"resource_tracker"))]


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
    """Running candidate programs of this test session, started cold or forked warm, and what they started.

    A cold candidate runs `python .../candidate.py`; a warm one is a fork of a fork server and works in
    this session's temporary root; either way its descendants count too.
    """
    root = tempfile.gettempdir()
    parents = live_processes()
    servers = [pid for pid in parents if is_fork_server(pid) and _tmpdir(pid) == root]
    found = set(_descendants(servers, parents))
    for pid in parents:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(root) or any(arg.startswith(os.fsencode(root)) and arg.endswith(b"/candidate.py") for arg in argv):
            found.add(pid)
    return sorted(pid for pid in found if pid != os.getpid() and process_alive(pid))


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


def error_lines(stderr: str) -> list[str]:
    """What a command said was wrong: its stderr less argparse's usage line and that line's indented continuations."""
    return [line for line in stderr.splitlines() if not line.startswith(("usage:", " "))]


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
    # Workers look for their driver once a second, and a candidate whose request was on its way when the driver died
    # may start after it; on a loaded machine (tests run two files at once) both take longer. So: within the deadline,
    # every candidate is gone and none has appeared for a few seconds.
    assert lingering_candidates(within_s=30, quiet_s=5) == {}, "candidates kept training after their driver died"


def lingering_candidates(within_s: float, quiet_s: float = 0.0) -> dict[int, str]:
    """Candidates still alive `within_s` from now, or that appeared in the last `quiet_s` of it, each described.

    A candidate whose worker was killed dies by the signal its parent's death sends it (PR_SET_PDEATHSIG), a chain
    that takes the kernel a moment on a loaded machine: what is gone within seconds was not left behind.
    """
    deadline = time.time() + within_s
    left, quiet_since = candidates_alive(), time.time()
    while time.time() < deadline and (left or time.time() - quiet_since < quiet_s):
        time.sleep(0.1)
        left = candidates_alive()
        if left:
            quiet_since = time.time()
    return {pid: _described(pid) for pid in left}


def _described(pid: int) -> str:
    """A leftover process as a failure message needs it: its command line, state, age and directory, and its ancestors'."""
    chain = []
    while pid > 1 and len(chain) < 8:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            break
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        command = _cmdline(pid).replace(bytes(1), b" ")[:100].decode(errors="replace")
        chain.append(f"{pid} [{fields[0]}, pgid {fields[2]}, {age:.0f} s old, in {cwd}] {command}")
        pid = int(fields[1])
    return " <- ".join(chain)


def evolve_killed_after(args: list[str], run_dir: Path, marker: str) -> dict[str, float]:
    """Start `evocode evolve` with args in run_dir, SIGKILL its driver as soon as a finished evaluation's key contains
    marker (e.g. " seed " for a re-evaluation), and return the finish times it left."""
    driver = subprocess.Popen([sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), *args, "--run-dir", str(run_dir)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not any(marker in key for key in finish_times(run_dir)):
        time.sleep(0.05)
    sigkill_driver(driver)
    return finish_times(run_dir)


def resume_redoing_nothing(run_dir: Path, before: dict[str, float]) -> None:
    """`evocode resume` finishes the run, and every evaluation finished before it was kept, not redone."""
    resumed = subprocess.run([sys.executable, "-m", "evocode", "resume", str(run_dir), "--no-progress"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = finish_times(run_dir)
    assert {key: after[key] for key in before} == before, "a completed evaluation was redone"


def record_phases(monkeypatch) -> list[list[str]]:
    """The job keys of each batch that evolve queues from now on (evocode.executors.stream.Stream.add), in the order
    queued; a batch that holds only keys already queued adds none."""
    from evocode.executors.stream import Stream

    phases: list[list[str]] = []
    real = Stream.add

    def recording(self, jobs):
        jobs = list(jobs)
        phases.append([job.key for job, _, _ in sorted(jobs, key=lambda j: j[1])])
        return real(self, jobs)

    monkeypatch.setattr(Stream, "add", recording)
    return phases
