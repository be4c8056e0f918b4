"""Stacking: a change that helped one program is added, whole, to another that lacks it.

The end-to-end test is a real run at a tiny budget on a script with three
learning rates, all far too high, and one plugin mutator for each: lowering
any helps, and a program that takes another's change helps more.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import REPO
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import evolve
from evocode.genome import Edit, Genome, edits_from_json, edits_to_json
from evocode.mutation import load_mutators
from evocode.search.credit import new_edits
from evocode.search.stacking import Change, helpful_changes, stack
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import Candidate, Evaluated

SEED = "A = 1\nB = 1\nC = 1\n"
PLUGINS = REPO / "tests" / "plugins"
RATE_MUTATORS = tuple(f"{PLUGINS / 'three_rates.py'}:{name}"
                      for name in ("LowerTheTableRate", "LowerTheBiasRate", "LowerTheScaleRate"))


def edit(site: str, value: str) -> Edit:
    return Edit("set", site, value, f"{site} → {value}")


def record(cid: str, parents: tuple[str, ...], edits: list[Edit], val_bpb: float | None, origin: str = "mutation") -> Evaluated:
    genome = Genome(SEED).with_edits(*edits)
    result = EvalResult("ok", val_bpb=val_bpb) if val_bpb is not None else EvalResult("crash", reason="RuntimeError")
    return Evaluated(Candidate(cid, len(parents), origin if parents else "seed", parents, edits_to_json(edits), "",
                               genome.code_hash, genome.code), result)


def test_a_helpful_change_is_what_a_child_added_to_its_parent_and_beat_it_by():
    a, b, c = edit("A", "2"), edit("B", "2"), edit("C", "2")
    runs = [record("s", (), [], 3.0), record("m1", ("s",), [a], 2.5), record("m2", ("m1",), [a, b, c], 2.0),
            record("worse", ("s",), [c], 3.5), record("failed", ("s",), [b], None),
            record("crossed", ("m1", "m2"), [a, c], 1.0, origin="crossover")]
    assert helpful_changes(runs) == [Change("m1", (a,), 0.5), Change("m2", (b, c), 0.5)]


def test_a_change_shown_by_several_children_appears_once_with_its_best_delta():
    a, b = edit("A", "2"), edit("B", "2")
    runs = [record("s", (), [], 3.0), record("m1", ("s",), [a], 2.5), record("m2", ("s",), [b], 2.75),
            record("m3", ("m2",), [b, a], 2.0)]
    assert helpful_changes(runs) == [Change("m3", (a,), 0.75), Change("m2", (b,), 0.25)]


def test_stacking_adds_a_change_only_at_sites_the_parent_leaves_alone():
    parent = Genome(SEED).with_edits(edit("A", "5"))
    clashing, fitting = Change("x", (edit("A", "2"),), 9.0), Change("y", (edit("B", "2"), edit("C", "3")), 0.1)
    child, change = stack(parent, [clashing, fitting], np.random.default_rng(0))
    assert change == fitting
    assert child.edits == (edit("A", "5"), edit("B", "2"), edit("C", "3"))
    assert child.code == "A = 5\nB = 2\nC = 3\n"
    assert stack(parent, [clashing], np.random.default_rng(0)) is None


def test_the_change_is_drawn_in_proportion_to_how_much_it_helped():
    changes = [Change("big", (edit("B", "2"),), 0.3), Change("small", (edit("C", "2"),), 0.1)]
    rng = np.random.default_rng(1)
    drawn = Counter(stack(Genome(SEED), changes, rng)[1].donor for _ in range(2000))
    assert drawn["big"] / 2000 == pytest.approx(0.75, abs=0.04)


@pytest.fixture(scope="module")
def stacked_run(tiny_spec, tmp_path_factory) -> list[Evaluated]:
    config = EvolveConfig(population=4, generations=1, elite=1, cx=0.0, model=0.0, stack=1.0, workers=2, seed=2, mutators=RATE_MUTATORS,
                          seeds=1)
    settings = RunSettings((PLUGINS / "three_rates_seed.py").read_text(), "three_rates_seed.py", config, tiny_spec,
                           Limits(threads=1))
    return evolve(settings, tmp_path_factory.mktemp("stacked"), load_mutators(list(RATE_MUTATORS)))


def test_a_stacked_child_is_its_parent_with_the_donors_change(stacked_run):
    by_id = {e.candidate.id: e for e in stacked_run}
    stacked = [e for e in stacked_run if e.candidate.origin == "stacking"]
    assert stacked, [e.candidate.origin for e in stacked_run]
    for child in stacked:
        parent, donor = (by_id[p] for p in child.candidate.parents)
        donated = new_edits(by_id[donor.candidate.parents[0]], donor)
        assert edits_from_json(child.candidate.genome) == edits_from_json(parent.candidate.genome) + donated


def test_two_changes_that_each_helped_help_more_together(stacked_run):
    by_id = {e.candidate.id: e for e in stacked_run}
    for child in (e for e in stacked_run if e.candidate.origin == "stacking"):
        parent, donor = (by_id[p] for p in child.candidate.parents)
        assert child.result.val_bpb < min(parent.result.val_bpb, donor.result.val_bpb)
