"""Multi-fidelity: children are screened on a fraction of the budget, the best climb to the full budget, and runs
still replay and resume exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SEED_SCRIPT, error_lines, evolve_killed_after, resume_redoing_nothing
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import evolve
from evocode.mutation import load_mutators
from evocode.search.fidelity import brood_size, finalists, promoted, rung_budgets
from evocode.settings import MIN_TIMEOUT_S, EvolveConfig, RunSettings, rung_timeout
from evocode.store import RunStore

THREADS = max(1, (os.cpu_count() or 1) // 2)
# Two rungs, η = 3: children are screened on 4096 // 3 = 1365 tokens, the best third goes on to 4096.
TINY = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "1", "--workers", "2",
        "--device", "cpu", "--seeds", "2", "--timeout", "120", "--seed", "0", "--rungs", "2", "--eta", "3", "--no-progress"]


def rung_settings(spec) -> RunSettings:
    """What TINY gives on the command line, for runs made in this process."""
    config = EvolveConfig(population=4, generations=1, elite=2, workers=2, seed=0, seeds=2, rungs=2, eta=3)
    return RunSettings(SEED_SCRIPT.read_text(), "train.py", config, spec, Limits(timeout_s=120, threads=THREADS), auto_timeout=False)


def state(run_dir: Path) -> tuple[list, list, dict]:
    """Everything a run decided and measured: each candidate's full-budget results, every rung result, the populations."""
    with RunStore.reader(run_dir) as store:
        full = [(e.candidate.id, e.candidate.code_hash, [(r.seed, r.budget, r.status, r.val_bpb) for r in (e.result, *e.reevaluations)])
                for e in store.evaluated()]
        rungs = [(r.candidate_id, r.rung, r.budget, r.result.status, r.result.val_bpb) for r in store.rungs()]
        return full, rungs, store.populations()


@pytest.fixture(scope="module")
def rung_run(tiny_spec, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("rungs")
    evolve(rung_settings(tiny_spec), run_dir, load_mutators())
    return run_dir


def test_the_best_third_of_a_rung_by_score_is_promoted_ties_by_id():
    results = {"a": EvalResult("ok", val_bpb=3.0), "b": EvalResult("ok", val_bpb=2.0), "c": EvalResult("ok", val_bpb=2.5),
               "d": EvalResult("ok", val_bpb=2.0), "e": EvalResult("ok", val_bpb=4.0), "f": EvalResult("ok", val_bpb=3.5)}
    assert promoted(list(results), results, eta=3) == ["b", "d"]
    assert promoted(list(results), results, eta=2) == ["b", "c", "d"]
    assert promoted(["e"], results, eta=3) == ["e"], "a rung of one promotes it: ⌈n/η⌉"


def test_a_child_that_fails_at_a_low_rung_is_never_promoted_even_to_fill_the_places():
    results = {"fast": EvalResult("crash", val_bpb=None), "nan": EvalResult("nan", val_bpb=None), "ok": EvalResult("ok", val_bpb=9.0)}
    assert promoted(list(results), results, eta=2) == ["ok"], "two places, one child that trained"
    assert promoted(["fast", "nan"], results, eta=2) == []


def test_rungs_cost_about_the_training_tokens_of_the_children_they_replace():
    for children, rungs, eta in [(6, 2, 3), (6, 3, 3), (6, 3, 2), (8, 2, 2), (3, 2, 3)]:
        budgets = rung_budgets(400_000, rungs, eta)
        assert budgets[-1] == 400_000 and budgets[0] == 400_000 // eta ** (rungs - 1)
        climbing = [finalists(children, rungs) * eta ** (rungs - 1 - r) for r in range(rungs)]
        assert climbing[0] == brood_size(children, rungs, eta)
        tokens = sum(n * b for n, b in zip(climbing, budgets))
        assert abs(tokens - children * 400_000) <= rungs / 2 * 400_000, (children, rungs, eta)
    assert brood_size(6, 1, 3) == 6, "one rung is no screening"
    assert brood_size(6, 2, 3) == 9 and brood_size(6, 3, 3) == 18


def test_a_lower_rung_gets_the_derived_timeout_scaled_to_its_budget_never_below_a_minute_nor_above_the_full_one():
    assert rung_timeout(600.0, 100_000, 400_000) == 150.0
    assert rung_timeout(90.0, 100_000, 400_000) == MIN_TIMEOUT_S
    assert rung_timeout(45.0, 100_000, 400_000) == 45.0, "a time-fair run's tight timeout is never loosened"
    assert rung_timeout(None, 100_000, 400_000) is None, "a --timeout the user gave holds at every rung"


def test_every_child_is_screened_on_the_low_budget_and_only_the_promoted_reach_the_full_one(rung_run):
    with RunStore.reader(rung_run) as store:
        children = [c for c in store.candidates() if c.origin != "seed"]
        rungs = store.rungs()
        full = {e.candidate.id: e for e in store.evaluated()}
        populations = store.populations()
    screened = {r.candidate_id: r.result for r in rungs}
    assert {r.budget for r in rungs} == {4096 // 3}
    assert sorted(screened) == sorted(c.id for c in children)
    assert all(r.seed == 0 for r in screened.values()), "every rung trains on the run's evaluation seed"
    for generation in (0, 1):
        ours = [c.id for c in children if c.generation == generation]
        assert sorted(set(full) & set(ours)) == promoted(ours, screened, eta=3)
    assert len([c for c in children if c.generation == 0]) == brood_size(3, 2, 3)
    assert all(e.result.budget == 4096 for e in full.values()), "selection and fitness see full-budget scores only"
    assert all(i in full for population in populations.values() for i in population), "a screened-out child never enters selection"


def test_results_tsv_lists_screened_children_with_their_budget_and_status_counts_every_token(rung_run):
    header, *rows = [line.split("\t") for line in (rung_run / "results.tsv").read_text().splitlines()]
    assert header[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"] and header[-1] == "budget"
    with RunStore.reader(rung_run) as store:
        assert [row[0] for row in rows] == [c.id for c in store.candidates()]
        full = {e.candidate.id for e in store.evaluated()}
        tokens = sum(r.tokens for e in store.evaluated() for r in (e.result, *e.reevaluations))
        tokens += sum(r.result.tokens for r in store.rungs())
    for row in rows:
        if row[0] in full:
            assert row[3] != "screened" and row[-1] == "4096"
        else:  # stopped below the full budget: `screened`, or the failure that stopped it there
            assert row[3] not in ("keep", "discard") and row[-1] == str(4096 // 3)
    status = subprocess.run([sys.executable, "-m", "evocode", "status", str(rung_run), "--json"], capture_output=True, text=True)
    record = json.loads(status.stdout)
    assert record["training_tokens"] == tokens and record["screened_out"] == sum(row[0] not in full for row in rows)
    text = subprocess.run([sys.executable, "-m", "evocode", "status", str(rung_run)], capture_output=True, text=True).stdout
    assert f"compute:          {tokens:,} training tokens" in text


def test_show_gives_a_screened_child_its_budget_and_no_gain_over_the_seed(rung_run):
    rows = [line.split("\t") for line in (rung_run / "results.tsv").read_text().splitlines()]
    screened = next(row[0] for row in rows if row[3] == "screened")
    shown = subprocess.run([sys.executable, "-m", "evocode", "show", str(rung_run), screened], capture_output=True, text=True)
    first = shown.stdout.splitlines()[0]
    assert first.endswith(f"on {4096 // 3} training tokens (screened out below the full budget of 4096)") and "gain" not in first


def test_the_same_seed_with_rungs_makes_the_same_run(rung_run, tiny_spec, tmp_path):
    evolve(rung_settings(tiny_spec), tmp_path, load_mutators())
    assert state(tmp_path) == state(rung_run)


def test_a_run_killed_mid_rung_resumes_to_the_same_end_as_an_uninterrupted_one_redoing_nothing(rung_run, tmp_path):
    run_dir = tmp_path / "killed"
    before = evolve_killed_after(TINY, run_dir, " rung ")
    with RunStore.reader(run_dir) as store:
        unfinished = [r for r in store.rungs() if r.result is None]
    assert any(" rung " in key for key in before) and unfinished, "the kill did not land mid-rung"

    resume_redoing_nothing(run_dir, before)
    assert state(run_dir) == state(rung_run)


def test_settings_with_rungs_round_trip_and_a_run_stored_before_rungs_loads_without_them(tiny_spec):
    settings = rung_settings(tiny_spec)
    assert RunSettings.from_json(settings.to_json()) == settings
    old = settings.to_json()
    del old["config"]["rungs"], old["config"]["eta"]
    assert RunSettings.from_json(old).config.rungs == 1


def test_rungs_below_one_window_of_tokens_are_refused_in_one_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), "--budget", "4096", "--eval-tokens", "1024",
                          "--rungs", "5", "--run-dir", str(tmp_path / "run"), "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert error_lines(bad.stderr) == [
        "evocode: the lowest of 5 rungs would train on 50 tokens (--budget 4096 / 3^4), less than one window of --context 128; "
        "pass fewer --rungs, a smaller --eta or a larger --budget"
    ]
    assert not (tmp_path / "run").exists()
