"""Credit: the search learns from parent→child pairs which mutators help, and draws them more often.

The end-to-end test is a real run at a tiny budget on a script whose learning
rate is far too high, with two plugin mutators: one halves it (always helps),
one doubles it (always hurts).
"""

from __future__ import annotations

import math
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
from evocode.program import Program
from evocode.search.credit import EXPLORATION_FLOOR, Trial, credited, mutator_weights, new_edits, trials, what_helped_rows
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import Candidate, Evaluated, RunStore

PLUGINS = REPO / "tests" / "plugins"
LR_MUTATORS = tuple(f"{PLUGINS / 'learning_rate.py'}:{name}" for name in ("LowerLearningRate", "RaiseLearningRate"))


def bad_lr_run_with(mutators: tuple[str, ...], spec, run_dir: Path) -> Path:
    """A short run on bad_lr_seed.py with these mutators; one seed per candidate and every child a fresh mutant: these
    tests are about credit, not noise or recombination."""
    config = EvolveConfig(population=4, generations=2, elite=1, cx=0.0, model=0.0, stack=0.0, workers=2, seed=0,
                          mutators=mutators, seeds=1)
    settings = RunSettings((PLUGINS / "bad_lr_seed.py").read_text(), "bad_lr_seed.py", config, spec, Limits(threads=1))
    evolve(settings, run_dir, load_mutators(list(mutators)))
    return run_dir


@pytest.fixture(scope="module")
def bad_lr_run(tiny_spec, tmp_path_factory) -> Path:
    return bad_lr_run_with(LR_MUTATORS, tiny_spec, tmp_path_factory.mktemp("bad_lr"))


def new_edits_after_generation_0(run_dir: Path) -> list[Edit]:
    """The edits the mutants of later generations added to their parents: what the search drew once it had credit."""
    with RunStore.reader(run_dir) as store:
        evaluated = store.evaluated()
    by_id = {e.candidate.id: e for e in evaluated}
    return [edit for e in evaluated if e.candidate.generation >= 1 and e.candidate.origin == "mutation"
            for edit in new_edits(by_id[e.candidate.parents[0]], e)]


def test_the_mutator_that_helps_is_drawn_more_often_than_the_one_that_hurts(bad_lr_run):
    drawn = Counter(t.mutator for t in new_edits_after_generation_0(bad_lr_run))
    assert drawn["lower_learning_rate"] > 2 * drawn["raise_learning_rate"], drawn


def test_a_mutator_acts_more_often_at_the_site_where_it_helped():
    halve = load_mutators([f"{PLUGINS / 'learning_rate.py'}:HalveAConstant"])
    evidence = [Trial("halve_a_constant", "LEARNING_RATE", 0.5)] * 3 + [Trial("halve_a_constant", "UNUSED_SCALE", 0.0)] * 3
    (mutator,) = credited(halve, evidence)
    program, rng = Program((PLUGINS / "bad_lr_seed.py").read_text()), np.random.default_rng(0)
    sites = Counter(mutator.propose(program, rng).site for _ in range(400))
    assert sites["LEARNING_RATE"] > 2 * sites["UNUSED_SCALE"], sites


def test_what_helped_shows_each_mutators_tries_mean_delta_and_share_improved(bad_lr_run):
    with RunStore.reader(bad_lr_run) as store:
        rows = {r.label: r for r in what_helped_rows(store.evaluated())}
    lower = rows.pop("lower_learning_rate")
    assert lower.mean_delta > 0 and lower.share_improved > 0.5
    assert all(r.mean_delta < 0 and r.improved == 0 for r in rows.values()), "only lowering the learning rate helps here"
    assert lower.tries + sum(r.tries for r in rows.values()) == len(trials_of(bad_lr_run))


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


def test_a_child_that_failed_is_a_try_that_did_not_improve_credited_to_its_one_new_edit():
    first, second = Edit("one", "X", "2", "X 1 → 2"), Edit("two", "X", "3", "X 2 → 3")
    seed = record("s", (), [], EvalResult("ok", val_bpb=3.0))
    parent = record("p", ("s",), [first], EvalResult("ok", val_bpb=2.5))
    child = record("c", ("p",), [first, second], EvalResult("crash", reason="RuntimeError"))
    assert trials([seed, parent, child]) == [Trial("one", "X", 0.5, step=1.0), Trial("two", "X", None, step=math.log2(3 / 2))]
    rows = {r.label: r for r in what_helped_rows([seed, parent, child])}
    assert (rows["two"].tries, rows["two"].improved, rows["two"].mean_delta) == (1, 0, None)


def test_a_child_with_several_new_edits_is_no_evidence_about_either():
    first, second = Edit("one", "X", "2", "X 1 → 2"), Edit("two", "X", "3", "X 2 → 3")
    seed = record("s", (), [], EvalResult("ok", val_bpb=3.0))
    child = record("c", ("s",), [first, second], EvalResult("ok", val_bpb=2.0))
    assert trials([seed, child]) == []
