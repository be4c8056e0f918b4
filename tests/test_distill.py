"""`distill`: which edits carry a gain, the fewest that keep it, whether they transfer; resumable after a kill.

The synthetic case is real training at a tiny budget: a seed with a learning
rate 100× too small, one edit that fixes it, and one edit to a constant that
training never reads.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from joblib.externals.loky import get_reusable_executor

from conftest import REPO, SEED_SCRIPT, error_lines, unfinished_copy
from evocode.executors.local import Slots
from evocode.genome import Edit, apply_edits, code_hash
from evocode.insight.distill import distill
from evocode.insight.distill_run import DistillOptions, transfers
from evocode.insight.measurements import Condition, Measurements
from evocode.insight.simplify import simplify_edits
from evocode.store import RunStore

BAD_SEED = SEED_SCRIPT.read_text().replace(
    "LEARNING_RATE = 3e-3", "LEARNING_RATE = 3e-5\nNOTE = 0  # read by nothing: an edit here changes the program, not the training"
)
FIX_LR = Edit("hand", "LEARNING_RATE", "3e-3", "LEARNING_RATE 3e-5 → 3e-3")
NEUTRAL = Edit("hand", "NOTE", "1", "NOTE 0 → 1")
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def synthetic(tiny_spec, limits, tmp_path_factory):
    with RunStore(tmp_path_factory.mktemp("synthetic")) as store:
        measurements = Measurements(store, Slots(2))
        yield distill(BAD_SEED, (NEUTRAL, FIX_LR), measurements, SEEDS, Condition(tiny_spec, limits), ())
    get_reusable_executor().shutdown(wait=True)  # its idle workers would count as leftovers of later tests' candidates


def test_the_minimal_set_keeps_the_helpful_edit_and_drops_the_neutral_one(synthetic):
    assert [synthetic.edits[i] for i in synthetic.minimal] == [FIX_LR]
    assert "LEARNING_RATE = 3e-3" in synthetic.minimal_code and "NOTE = 0" in synthetic.minimal_code


def test_the_helpful_edit_helps_alone_and_is_missed_when_removed(synthetic):
    fix = next(f for f in synthetic.findings if f.edit == FIX_LR)
    assert fix.alone.holds() and fix.removed.holds() and fix.contribution.holds()


def test_the_neutral_edit_changes_nothing_on_any_seed(synthetic):
    neutral = next(f for f in synthetic.findings if f.edit == NEUTRAL)
    assert (neutral.alone.mean, neutral.alone.sd, neutral.removed.mean) == (0.0, 0.0, 0.0)
    assert not neutral.in_minimal


def test_the_minimal_set_keeps_the_full_sets_gain(synthetic):
    assert synthetic.minimal_loss.within_noise() and synthetic.minimal_gain.holds()


def test_edits_that_are_overwritten_or_undone_are_simplified_away_keeping_the_program():
    overwritten = Edit("hand", "LEARNING_RATE", "1e-3", "LEARNING_RATE 3e-5 → 1e-3")
    undo = [Edit("hand", "NOTE", "2", "NOTE 0 → 2"), Edit("hand", "NOTE", "0", "NOTE 2 → 0")]
    edits = (overwritten, undo[0], FIX_LR, undo[1])
    kept, dropped = simplify_edits(BAD_SEED, edits)
    assert kept == (FIX_LR,) and set(dropped) == {overwritten, *undo}
    assert code_hash(apply_edits(BAD_SEED, kept)) == code_hash(apply_edits(BAD_SEED, edits))


def evocode(*args: str, **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, "-m", "evocode", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)


def stored(run_dir) -> dict[tuple, float]:
    with sqlite3.connect(run_dir / "evocode.db") as db:
        rows = db.execute("SELECT code_hash, seed, budget, corpus, finished FROM distill_evaluations").fetchall()
    return {tuple(row[:4]): row[4] for row in rows}


def wait_for_rows(run_dir, n: int, process: subprocess.Popen) -> None:
    while process.poll() is None:
        try:
            if len(stored(run_dir)) >= n:
                return
        except sqlite3.OperationalError:
            pass  # the table is not created yet
        time.sleep(0.2)
    pytest.fail(f"distill ended before storing {n} evaluations: {process.stderr.read()}")


DISTILL = ["--transfer-budget", "8192"]


@pytest.fixture(scope="module")
def killed_and_rerun(finished_run, tmp_path_factory):
    """A distill killed (SIGKILL, its whole process group) after storing some evaluations, then run again to the end."""
    run_dir = tmp_path_factory.mktemp("distill") / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("evocode.lock"))
    process = evocode("distill", str(run_dir), *DISTILL, background=True)
    wait_for_rows(run_dir, 2, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = stored(run_dir)
    rerun = evocode("distill", str(run_dir), *DISTILL)
    assert rerun.returncode == 0, rerun.stderr
    return run_dir, before, rerun


def test_a_killed_distill_rerun_redoes_nothing_that_finished(killed_and_rerun):
    run_dir, before, rerun = killed_and_rerun
    after = stored(run_dir)
    assert {key: after[key] for key in before} == before
    assert f"trained {len(after) - len(before)} programs now; {len(before)} measurements were in the store" in rerun.stderr


def test_distill_writes_its_table_the_minimal_program_and_its_diff(killed_and_rerun):
    run_dir, _, rerun = killed_and_rerun
    table = (run_dir / "distill.md").read_text()
    assert "| edit | alone | removed | in minimal set | transfers |" in table and rerun.stdout == table
    compile((run_dir / "minimal.py").read_text(), "minimal.py", "exec")
    assert (run_dir / "minimal.diff").read_text().startswith("# minimal set of ")


def test_the_report_shows_the_distill_table(killed_and_rerun):
    run_dir, _, _ = killed_and_rerun
    assert "<h2>Distilled edits of " in (run_dir / "report.html").read_text()


def test_a_finished_distill_run_again_trains_nothing(killed_and_rerun):
    run_dir, _, _ = killed_and_rerun
    again = evocode("distill", str(run_dir), *DISTILL)
    assert again.returncode == 0 and "trained 0 programs now" in again.stderr


def test_distill_on_a_directory_without_a_run_is_a_one_line_error(tmp_path):
    result = evocode("distill", str(tmp_path))
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "holds no evocode run" in result.stderr


def test_distill_on_an_unfinished_run_is_a_one_line_error_that_says_resume(finished_run, tmp_path):
    run_dir = unfinished_copy(finished_run, tmp_path / "killed")
    result = evocode("distill", str(run_dir))
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "evocode resume" in result.stderr


def test_distill_needs_three_seeds_or_more(finished_run):
    result = evocode("distill", str(finished_run), "--seeds", "2")
    assert result.returncode == 2 and "--seeds must be at least 3" in result.stderr


def test_transfer_is_checked_at_four_times_the_budget_and_on_another_corpus_when_given(tiny_spec, limits, tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(4000)))
    base = Condition(tiny_spec, limits)
    bigger, other = transfers(base, DistillOptions(transfer_data=text))
    assert (bigger.condition.spec.budget, bigger.condition.limits.timeout_s) == (4 * tiny_spec.budget, 4 * limits.timeout_s)
    assert bigger.condition.corpus == base.corpus
    assert other.condition.spec.budget == tiny_spec.budget and other.condition.corpus != base.corpus
