"""Model proposals: several constants moved at once, toward where the good programs have them.

The unit tests give the model synthetic observations (programs that are
only constants, scored by a known rule); the end-to-end test is a real run
at a tiny budget where every child not from crossover is a model proposal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import REPO
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import breed, evolve
from evocode.genome import Edit, Genome, edits_from_json
from evocode.mutation import load_mutators
from evocode.search.parzen import COST_SHARE, STARTUP, fit, model_child, propose
from evocode.search.space import Param, bounds, constant_space, coordinate, value
from evocode.search.steps import module_numbers
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import Candidate, Evaluated

SEED = "N_LAYER = 4\nBATCH_SIZE = 16\nSTEPS = 10\nDROPOUT = 0.0\nLR = 0.01\nBETA2 = 0.95\nGRAD_CLIP = 1.0\nFLAG = True\n"
SPACE = constant_space(SEED, context_length=256)
PLUGINS = REPO / "tests" / "plugins"


def program(cid: str, values: dict[str, float | int], val_bpb: float | None, seconds: float = 0.0) -> Evaluated:
    code = "".join(f"{name} = {v!r}\n" for name, v in values.items())
    result = EvalResult("ok", val_bpb=val_bpb, wall_seconds=seconds) if val_bpb is not None else \
        EvalResult("crash", reason="RuntimeError")
    return Evaluated(Candidate(cid, 1, "mutation", ("s",), "[]", "", "", code), result)


def in_box(p: Param, v: float | int) -> bool:
    if p.kind == "power_of_two":
        return isinstance(v, int) and v & (v - 1) == 0 and p.low <= math.log2(v) <= p.high
    if p.kind == "integer":
        return isinstance(v, int) and p.low <= v <= p.high
    return p.low <= (1 - v if p.kind == "near_one" else v) <= p.high


def test_each_kind_of_constant_round_trips_through_its_coordinate():
    assert [p.kind for p in SPACE] == ["power_of_two", "power_of_two", "integer", "zero_fraction", "fraction", "near_one",
                                       "positive"]
    for p in SPACE:
        x = coordinate(p, p.value)
        assert bounds(p)[0] <= x <= bounds(p)[1]
        assert value(p, x) == pytest.approx(p.value)
        assert type(value(p, x)) is type(p.value)


def test_startup_draws_cover_the_box_once_costs_are_known_and_stay_near_the_seed_before():
    timed = [program(f"c{i}", {"LR": 0.01 * 2 ** (i % 3)}, 3.0, seconds=1.0 + i) for i in range(STARTUP - 1)]
    untimed = [program(f"c{i}", {"LR": 0.01}, 3.0) for i in range(STARTUP - 1)]
    for runs, batches in ((timed, {4, 8, 16, 32, 64}), (untimed, {8, 16, 32}), ([], {8, 16, 32})):
        model = fit(SPACE, runs)
        assert model.good is None, "too few observations to model"
        rng = np.random.default_rng(0)
        draws = [propose(model, rng) for _ in range(300)]
        for p in SPACE:
            values = [d[p.name] for d in draws]
            assert all(in_box(p, v) for v in values), (p, values)
        assert {d["BATCH_SIZE"] for d in draws} == batches, (len(runs), "the powers of two within ±2 doublings, or ±1")
        if runs is not timed:
            assert all(0.005 <= d["LR"] <= 0.02 for d in draws), "other positives within a factor of 2"


def test_with_the_whole_reach_startup_draws_cover_the_box_before_costs_are_known():
    model = fit(SPACE, [], reach=1.0)
    rng = np.random.default_rng(0)
    draws = [propose(model, rng) for _ in range(300)]
    assert {d["BATCH_SIZE"] for d in draws} == {4, 8, 16, 32, 64}
    assert min(d["LR"] for d in draws) < 0.005 and max(d["LR"] for d in draws) > 0.02


def test_proposals_concentrate_where_the_good_programs_are_and_avoid_the_bad_region():
    # LR is best at 0.02 and costs with its log distance from it; BATCH_SIZE does not matter.
    rng = np.random.default_rng(1)
    runs = []
    for i in range(30):
        lr, batch = float(np.exp(rng.uniform(math.log(0.0025), math.log(0.04)))), int(2 ** rng.integers(2, 7))
        runs.append(program(f"c{i:02d}", {"BATCH_SIZE": batch, "LR": lr}, 3.0 + math.log2(lr / 0.02) ** 2))
    runs.append(program("crashed", {"BATCH_SIZE": 16, "LR": 0.02}, None))
    model = fit(SPACE, runs)
    draws = [propose(model, rng) for _ in range(200)]
    lrs = np.array([d["LR"] for d in draws])
    # Drawn uniformly on the log scale of the box (0.0025..0.04), a quarter would land in each of these.
    assert np.mean((lrs > 0.02 / 2**0.5) & (lrs < 0.02 * 2**0.5)) > 0.6
    assert np.mean(lrs < 0.005) < 0.05
    assert all(in_box(SPACE[1], d["BATCH_SIZE"]) for d in draws), "powers of two stay powers of two"


def timed(cid: str, n_layer: int, batch: int, limit_s: float) -> Evaluated:
    """A program whose evaluation takes (N_LAYER / 4) · (BATCH_SIZE / 16) seconds, killed at limit_s, and scores better
    the more it computes (as a larger model does, until it no longer finishes)."""
    seconds, values = n_layer / 4 * batch / 16, {"N_LAYER": n_layer, "BATCH_SIZE": batch}
    if seconds < limit_s:
        return program(cid, values, 3.0 - 0.1 * math.log2(seconds), seconds)
    timed_out = program(cid, values, None)
    return Evaluated(timed_out.candidate, EvalResult("timeout", wall_seconds=limit_s))


@pytest.mark.parametrize("observed", [STARTUP - 2, 3 * STARTUP], ids=["startup", "densities"])
def test_proposals_keep_clear_of_the_time_limit_once_programs_show_what_costs_time(observed):
    rng = np.random.default_rng(2)
    runs = [timed(f"c{i:02d}", int(2 ** rng.integers(0, 5)), int(2 ** rng.integers(2, 7)), limit_s=4.0)
            for i in range(observed)]

    def seconds(d: dict) -> float:
        return d["N_LAYER"] / 4 * d["BATCH_SIZE"] / 16

    free = [seconds(propose(fit(SPACE, runs), rng)) for _ in range(200)]
    limited = [seconds(propose(fit(SPACE, runs, limit_s=4.0), rng)) for _ in range(200)]
    assert np.mean(np.array(free) >= 4.0) > 0.1, "without a limit, the box holds programs that would time out"
    assert max(limited) < 4.0, "no proposal is one that would time out"
    assert np.mean(np.array(limited) <= 2.0) > 0.9, "nearly all within half the limit"


def test_a_larger_cost_share_lets_proposals_take_more_of_the_limit():
    rng = np.random.default_rng(3)
    runs = [timed(f"c{i:02d}", int(2 ** rng.integers(0, 5)), int(2 ** rng.integers(2, 7)), limit_s=4.0)
            for i in range(3 * STARTUP)]

    def seconds(d: dict) -> float:
        return d["N_LAYER"] / 4 * d["BATCH_SIZE"] / 16

    half = [seconds(propose(fit(SPACE, runs, limit_s=4.0), rng)) for _ in range(200)]
    whole = [seconds(propose(fit(SPACE, runs, limit_s=4.0, cost_share=1.0), rng)) for _ in range(200)]
    assert max(half) <= 2.0 * 1.5 and max(whole) < 4.0 * 1.5, "each within its share, give or take the fit's error"
    assert np.mean(np.array(whole) > 2.0) > np.mean(np.array(half) > 2.0) + 0.05, "more draws past half the limit"


def test_with_every_proposal_too_costly_the_cheapest_is_made():
    runs = [timed(f"c{n}-{b}", n, b, limit_s=1.5) for n, b in ((4, 16), (8, 16), (4, 32))]  # the seed's size takes 1 s
    model = fit(SPACE, runs, limit_s=1.5)
    assert not model.cost.affordable(model.cost.center[None], COST_SHARE).any()
    draws = [propose(model, np.random.default_rng(i)) for i in range(5)]
    assert all(in_box(p, d[p.name]) for d in draws for p in model.space)
    assert all(d["N_LAYER"] / 4 * d["BATCH_SIZE"] / 16 < 1.0 for d in draws), "cheaper than the seed"


def test_the_cost_model_expects_a_child_with_twice_the_layers_to_take_about_twice_as_long():
    """What orders a phase's evaluations longest first (evocode.evolve.evaluate_jobs)."""
    runs = [timed(f"c{n}{b}", n, b, limit_s=100.0) for n in (1, 2, 4, 8, 16) for b in (4, 16, 64)]
    cost = fit(SPACE, runs, limit_s=100.0).cost
    assert cost.ratio("N_LAYER = 8\nBATCH_SIZE = 16\n", than="N_LAYER = 4\nBATCH_SIZE = 16\n") == pytest.approx(2.0, rel=0.2)
    assert cost.ratio("N_LAYER = 4\nBATCH_SIZE = 16\nLR = 0.1\n", than="N_LAYER = 4\nBATCH_SIZE = 16\n") == \
        pytest.approx(1.0, abs=0.05), "a constant no program moved costs nothing"


def test_a_long_move_in_a_direction_no_timed_program_took_may_cost_far_more_than_predicted():
    """What ranks a generation's evaluations: a child whose time is uncertain is queued as a long one."""
    runs = [timed(f"c{n}{b}", n, b, limit_s=100.0) for n in (1, 2, 4, 8, 16) for b in (4, 16, 64)]
    cost = fit(SPACE, runs, limit_s=100.0).cost
    seed, deeper = "N_LAYER = 4\nBATCH_SIZE = 16\n", "N_LAYER = 8\nBATCH_SIZE = 16\n"
    assert cost.upper_ratio(deeper, than=seed) == pytest.approx(cost.ratio(deeper, than=seed), rel=0.1), \
        "the timed programs moved the layers: little doubt"
    unseen = [f"N_LAYER = 4\nBATCH_SIZE = 16\nLR = {lr}\n" for lr in (0.02, 0.04)]
    assert [cost.ratio(code, than=seed) for code in unseen] == pytest.approx([1.0, 1.0], abs=0.05)
    assert 1.5 < cost.upper_ratio(unseen[0], than=seed) < cost.upper_ratio(unseen[1], than=seed), \
        "no program moved LR: its cost is unknown, the more so the further it moves"


def test_a_model_child_writes_only_the_constants_that_change_replacing_the_parents_edits_there():
    parent = Genome(SEED).with_edits(Edit("scale_constant", "LR", "0.005", "LR → 0.005"),
                                     Edit("scale_constant", "STEPS", "20", "STEPS → 20"))
    child = model_child(parent, {"N_LAYER": 4, "LR": 0.02, "GRAD_CLIP": 2.0, "STEPS": 20})
    assert [(e.mutator, e.site, e.code) for e in child.edits] == [("scale_constant", "STEPS", "20"), ("model", "LR", "0.02"),
                                                                  ("model", "GRAD_CLIP", "2.0")]
    numbers = module_numbers(child.code)
    assert (numbers["N_LAYER"], numbers["LR"], numbers["GRAD_CLIP"], numbers["STEPS"]) == (4, 0.02, 2.0, 20)
    assert model_child(parent, {"N_LAYER": 4, "LR": 0.005}) is None, "nothing to change"


@pytest.mark.parametrize("share", [0.3, 0.5, 0.7])
def test_from_the_seed_alone_the_model_proposes_its_share_of_the_children_exactly(tiny_spec, share):
    """A first generation drawn child by child was sometimes all model draws far from the seed (0.7^7: one run in
    twelve), which left a run no mutant of the seed to build on; the share is a quota instead, on every run seed."""
    settings = RunSettings(SEED, "seed.py", EvolveConfig(population=8, model=share, workers=2), tiny_spec, Limits(threads=1))
    for run_seed in range(6):
        made = breed(settings, load_mutators(), [], 0, [], None, set(), [], [], 8, np.random.default_rng([run_seed, 0]))
        origins = [c.origin for c in made]
        assert origins[0] == "seed" and len(origins) == 8
        assert origins.count("model") == int(share * 7 + 0.5), (run_seed, origins)
        assert origins.count("mutation") == 7 - int(share * 7 + 0.5), (run_seed, origins)


def model_run(tiny_spec, run_dir) -> list[Evaluated]:
    mutators = (f"{PLUGINS / 'three_rates.py'}:LowerTheTableRate",)
    config = EvolveConfig(population=4, generations=1, elite=1, cx=0.0, model=1.0, workers=2, seed=3, mutators=mutators, seeds=1)
    settings = RunSettings((PLUGINS / "three_rates_seed.py").read_text(), "three_rates_seed.py", config, tiny_spec,
                           Limits(threads=1))
    return evolve(settings, run_dir, load_mutators(list(mutators)))


def test_a_run_evaluates_model_children_and_replays_them_from_its_seed(tiny_spec, tmp_path):
    first = model_run(tiny_spec, tmp_path / "first")
    children = [e for e in first if e.candidate.origin != "seed"]
    assert children and all(e.candidate.origin == "model" for e in children), [e.candidate.origin for e in first]
    assert all(e.result.status == "ok" for e in children)
    assert {e.candidate.generation for e in children} == {0, 1}
    space = constant_space((PLUGINS / "three_rates_seed.py").read_text(), tiny_spec.context_length)
    for child in children:
        assert {e.mutator for e in edits_from_json(child.candidate.genome)} == {"model"}
        numbers = module_numbers(child.candidate.code)
        assert all(in_box(p, numbers[p.name]) for p in space)
    again = model_run(tiny_spec, tmp_path / "again")
    assert [(e.candidate.code_hash, e.candidate.origin, e.result.val_bpb) for e in again] == \
        [(e.candidate.code_hash, e.candidate.origin, e.result.val_bpb) for e in first]


def test_a_run_stored_before_model_proposals_resumes_without_them(tiny_spec):
    settings = RunSettings(SEED, "seed.py", EvolveConfig(workers=2), tiny_spec, Limits(threads=1))
    assert settings.config.model > 0
    assert RunSettings.from_json(settings.to_json()) == settings
    old = settings.to_json()
    del old["config"]["model"]
    assert RunSettings.from_json(old).config.model == 0.0
