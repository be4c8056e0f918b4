"""Whether a run is running, finished or interrupted, read from its directory alone.

A driver holds an exclusive lock on the run's `evocode.lock` for as long as
it works, and the kernel drops that lock the moment the driver dies, however
it dies; so "running" is asked of the kernel (/proc/locks), not of a pid file
that a SIGKILL leaves behind. A run whose every generation is recorded is
finished; any other run that nobody holds was interrupted and continues with
`resume`. The driver also records its pid and its start and end times in the
store's `run` table, for people and for `runs`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from evocode.options import holds_run
from evocode.outputs import summary
from evocode.settings import RunSettings
from evocode.store import Evaluated, RungEvaluation, RunStore

DRIVER_KEY = "driver"


@dataclass(frozen=True)
class RunState:
    """state: running, finished or interrupted; pid: the driver's while running."""

    state: str
    pid: int | None
    planned: int
    done: int
    last_activity: float | None

    def describe(self, run_dir: Path) -> str:
        if self.state == "running":
            return f"running (driver pid {self.pid})"
        if self.state == "interrupted":
            return f"interrupted (resume with `python -m evocode resume {run_dir}`)"
        return "finished"


def record_start(store: RunStore) -> None:
    store.put(DRIVER_KEY, {"pid": os.getpid(), "started": time.time(), "ended": None})


def record_end(store: RunStore) -> None:
    """The driver stopped by itself (done, or with an error it reported); a killed driver records nothing."""
    store.put(DRIVER_KEY, {**(store.get(DRIVER_KEY) or {}), "ended": time.time()})


def lock_holder(lock_file: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The pid that holds a flock on lock_file, or None when nobody does (or the kernel does not say)."""
    try:
        st = lock_file.stat()
        table = locks.read_text()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 3157 fe:00:2146612 0 EOF"; a blocked waiter's line starts with "->"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            return int(fields[4])
    return None


def run_state(run_dir: Path, store: RunStore, settings: RunSettings) -> RunState:
    planned = settings.config.planned_evaluations
    done = len(store.evaluated())
    driver = store.get(DRIVER_KEY) or {}
    times = [*store.finish_times().values(), driver.get("started"), driver.get("ended")]
    last = max((t for t in times if t is not None), default=None)
    pid = lock_holder(run_dir / "evocode.lock")
    if pid is not None:
        return RunState("running", pid, planned, done, last)
    finished = len(store.populations()) == settings.config.generations + 1
    return RunState("finished" if finished else "interrupted", None, planned, done, last)


def status_record(run_dir: Path, state: RunState, evaluated: list[Evaluated], rungs: Sequence[RungEvaluation] = ()) -> dict:
    """`status --json`: the state and the numbers `status` prints, for scripts."""
    s = summary(evaluated, rungs)
    best = s["best"]
    return {
        "run": str(run_dir),
        "state": state.state,
        "driver_pid": state.pid,
        "planned": state.planned,
        "evaluations": state.done,
        "statuses": s["statuses"],
        "generation": s["generation"],
        "seed_val_bpb": s["seed_val_bpb"],
        "best": None if best is None else {
            "id": best.candidate.id, "val_bpb": best.result.val_bpb, "description": best.candidate.description,
        },
        "gain": s["gain"],
        "median_seconds": s["median_seconds"],
        "training_tokens": s["spent"].tokens,
        "training_seconds": s["spent"].seconds,
        "screening_tokens": s["spent"].screening_tokens,
        "screened_out": s["spent"].screened_out,
        "last_activity": state.last_activity,
    }


_RUNS_COLUMNS = ("run", "state", "seed", "best", "gain", "evals", "last activity")


def describe_runs(directory: Path) -> str:
    """One row per run directory directly under `directory`, the most recently active last; "" when there is none."""
    rows = []
    for run_dir in sorted(p for p in directory.iterdir() if holds_run(p)):
        try:
            with RunStore.reader(run_dir) as store:
                settings = RunSettings.from_json(store.get("settings"))
                state = run_state(run_dir, store, settings)
                s = summary(store.evaluated())
        except (TypeError, KeyError, ValueError, sqlite3.Error) as e:
            # Made by another evocode version, or damaged: listed, not a traceback for the whole list.
            rows.append((0.0, (run_dir.name, f"unreadable ({type(e).__name__})", "-", "-", "-", "-", "-")))
            continue
        rows.append((state.last_activity or 0.0, (
            run_dir.name,
            state.state if state.pid is None else f"running ({state.pid})",
            settings.seed_name,
            "-" if s["best"] is None else f"{s['best'].result.val_bpb:.4f}",
            "-" if s["gain"] is None else f"{s['gain']:+.4f}",
            f"{state.done}/{state.planned}",
            "-" if state.last_activity is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.last_activity)),
        )))
    if not rows:
        return ""
    table = [_RUNS_COLUMNS] + [row for _, row in sorted(rows, key=lambda r: r[0])]
    widths = [max(len(row[i]) for row in table) for i in range(len(_RUNS_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
