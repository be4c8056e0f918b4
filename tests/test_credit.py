"""Credit: the search learns from parent→child pairs which mutators help, and draws them more often.

The end-to-end test is a real run at a tiny budget on a script whose learning
rate is far too high, with two plugin mutators: one halves it (always helps),
one doubles it (always hurts).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import evolve
from evocode.genome import Edit, Genome, edits_to_json
from evocode.mutation import load_mutators
from evocode.search.credit import EXPLORATION_FLOOR, Trial, mutator_weights, trials, what_helped_rows
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import Candidate, Evaluated, RunStore

PLUGINS = REPO / "tests" / "plugins"
LR_MUTATORS = tuple(f"{PLUGINS / 'learning_rate.py'}:{name}" for name in ("LowerLearningRate", "RaiseLearningRate"))


def bad_lr_settings(spec) -> RunSettings:
    """One seed per candidate: this test is about credit, not noise."""
    config = EvolveConfig(population=4, generations=2, elite=1, cx=0.0, workers=2, seed=0, mutators=LR_MUTATORS, seeds=1)
    return RunSettings((PLUGINS / "bad_lr_seed.py").read_text(), "bad_lr_seed.py", config, spec, Limits(threads=1))


@pytest.fixture(scope="module")
def bad_lr_run(tiny_spec, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("bad_lr")
    settings = bad_lr_settings(tiny_spec)
    evolve(settings, run_dir, load_mutators(list(settings.config.mutators)))
    return run_dir


def new_edit_mutators(run_dir: Path, from_generation: int) -> Counter:
    with RunStore.reader(run_dir) as store:
        return Counter(t.mutator for t in trials([e for e in store.evaluated() if e.candidate.generation >= from_generation]))


def test_the_mutator_that_helps_is_drawn_more_often_than_the_one_that_hurts(bad_lr_run):
    drawn = new_edit_mutators(bad_lr_run, from_generation=1)
    assert drawn["lower_learning_rate"] > 2 * drawn["raise_learning_rate"], drawn


def test_what_helped_shows_each_mutators_tries_mean_delta_and_share_improved(bad_lr_run):
    with RunStore.reader(bad_lr_run) as store:
        rows = {r.label: r for r in what_helped_rows(store.evaluated())}
    lower, higher = rows["lower_learning_rate"], rows["raise_learning_rate"]
    assert lower.mean_delta > 0 > higher.mean_delta
    assert lower.share_improved > higher.share_improved
    assert lower.tries + higher.tries == len(trials_of(bad_lr_run))


def trials_of(run_dir: Path) -> list[Trial]:
    with RunStore.reader(run_dir) as store:
        return trials(store.evaluated())


def test_the_what_helped_command_prints_the_table_per_mutator_and_per_site(bad_lr_run):
    table = subprocess.run([sys.executable, "-m", "evocode", "what-helped", str(bad_lr_run)], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[2].split()[0] == "lower_learning_rate"
    sites = subprocess.run([sys.executable, "-m", "evocode", "what-helped", str(bad_lr_run), "--sites"], capture_output=True, text=True)
    assert "lower_learning_rate @ LEARNING_RATE" in sites.stdout


def test_status_shows_what_helped(bad_lr_run):
    status = subprocess.run([sys.executable, "-m", "evocode", "status", str(bad_lr_run)], capture_output=True, text=True)
    assert status.returncode == 0 and "what helped" in status.stdout and "lower_learning_rate" in status.stdout


def test_every_mutator_keeps_the_exploration_floor_and_the_thompson_favourite_goes_first_most():
    evidence = [Trial("good", "A", 0.5)] * 20 + [Trial("bad", "A", -0.5)] * 20
    rng = np.random.default_rng(0)
    draws = [mutator_weights(["bad", "good", "untried"], evidence, rng) for _ in range(200)]
    assert all(w.sum() == pytest.approx(1.0) and w.min() == pytest.approx(EXPLORATION_FLOOR / 3) for w in draws)
    favourites = Counter(["bad", "good", "untried"][int(np.argmax(w))] for w in draws)
    assert favourites["good"] > favourites["untried"] > favourites["bad"], favourites


def record(cid: str, parents: tuple[str, ...], edits: list[Edit], result: EvalResult) -> Evaluated:
    genome = Genome("X = 1\n").with_edits(*edits)
    return Evaluated(Candidate(cid, len(parents), "mutation" if parents else "seed", parents, edits_to_json(edits), "",
                               genome.code_hash, genome.code), result)


def test_a_child_that_failed_is_a_try_that_did_not_improve_credited_to_its_new_edits_only():
    first, second = Edit("one", "X", "2", "X 1 → 2"), Edit("two", "X", "3", "X 2 → 3")
    seed = record("s", (), [], EvalResult("ok", val_bpb=3.0))
    parent = record("p", ("s",), [first], EvalResult("ok", val_bpb=2.5))
    child = record("c", ("p",), [first, second], EvalResult("crash", reason="RuntimeError"))
    assert trials([seed, parent, child]) == [Trial("one", "X", 0.5), Trial("two", "X", None)]
    rows = {r.label: r for r in what_helped_rows([seed, parent, child])}
    assert (rows["two"].tries, rows["two"].improved, rows["two"].mean_delta) == (1, 0, None)
