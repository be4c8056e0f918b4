"""Adaptive step sizes: a numeric mutation moves a constant further, and the same way, where that kept helping.

The end-to-end test is a real run at a tiny budget on a script whose learning
rate is far too high (every lowering helps), with the built-in scale_constant.
"""

from __future__ import annotations

import math
import numpy as np

from conftest import REPO
from evocode.evaluation.runner import Limits
from evocode.evolve import evolve
from evocode.mutation import Step, load_mutators
from evocode.program import Program
from evocode.search.credit import trials
from evocode.search.steps import GROW, MAX_SCALE, MIN_SCALE, SHRINK, log_step, step_sizes
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import RunStore
from mutators.constants import CountConstant, ScaleConstant
from mutators.data import BatchSize

BAD_LR_SEED = REPO / "tests" / "plugins" / "bad_lr_seed.py"


def test_the_scale_grows_after_a_step_that_helped_and_shrinks_after_one_that_did_not():
    assert step_sizes([("LR", -1.0, True)]) == {"LR": Step(GROW, -1)}
    assert step_sizes([("LR", -1.0, True), ("LR", 0.5, False)]) == {"LR": Step(GROW * SHRINK, -1)}, \
        "a failed step keeps the direction that helped"
    assert step_sizes([("LR", 1.0, True), ("STD", 1.0, False)])["STD"] == Step(SHRINK, -1), "each constant has its own"


def test_until_a_step_has_helped_the_advice_turns_around_after_each_step_that_did_not():
    assert step_sizes([("BATCH_SIZE", 1.0, False)])["BATCH_SIZE"].direction == -1, "doubling hurt: try halving"
    assert step_sizes([("BATCH_SIZE", 1.0, False), ("BATCH_SIZE", -1.0, False)])["BATCH_SIZE"].direction == 1
    assert step_sizes([("LR", -1.0, True), ("LR", -0.5, False)])["LR"].direction == -1, "what helped still leads"


def test_the_scale_stays_within_its_bounds_and_settles_where_one_try_in_five_helps():
    assert step_sizes([("LR", 1.0, True)] * 20)["LR"].scale == MAX_SCALE
    assert step_sizes([("LR", 1.0, False)] * 40)["LR"].scale == MIN_SCALE
    one_in_five = [("LR", 1.0, i % 5 == 0) for i in range(50)]
    assert math.isclose(step_sizes(one_in_five)["LR"].scale, 1.0), "rounds of one success and four failures end where they began"


def test_a_step_is_the_log2_ratio_of_a_module_level_number_and_nothing_else_is_a_step():
    assert log_step("LR = 0.01\n", "LR = 0.04\n", "LR") == 2.0
    assert log_step("LR = 0.01\nLR = 0.02\n", "LR = 0.01\n", "LR") == -1.0, "the last assignment is the value"
    assert log_step("FLAG = True\n", "FLAG = False\n", "FLAG") is None
    assert log_step("LR = 0.0\n", "LR = 0.1\n", "LR") is None
    assert log_step("def f():\n    LR = 1.0\n", "def f():\n    LR = 2.0\n", "LR") is None, "only module level"


def scale_steps(mutator: ScaleConstant, draws: int = 400) -> np.ndarray:
    program = Program("LEARNING_RATE = 0.001\n")
    rng = np.random.default_rng(0)
    news = [float(mutator.propose(program, rng).code) for _ in range(draws)]
    return np.log2(np.array(news) / 0.001)


def test_advice_makes_scale_constant_step_further_and_mostly_the_way_that_helped():
    plain = scale_steps(ScaleConstant())
    advised = scale_steps(ScaleConstant().advised({"LEARNING_RATE": Step(4.0, 1)}))
    assert 0.4 < (plain > 0).mean() < 0.6, "without advice, either way"
    assert 0.65 < (advised > 0).mean() < 0.85, "mostly, not always, the way that helped"
    assert np.median(np.abs(advised)) > 3 * np.median(np.abs(plain))


def test_advice_points_count_constant_the_way_that_helped_and_leaves_the_original_mutator_as_it_was():
    program = Program("N_LAYER = 4\n")
    plain = CountConstant()
    advised = plain.advised({"N_LAYER": Step(1.0, -1)})
    rng = np.random.default_rng(0)
    down = np.mean([int(advised.propose(program, rng).code) < 4 for _ in range(400)])
    assert down > 0.7
    assert dict(plain.steps) == {}, "advice goes to a copy"


def test_advice_points_batch_size_the_way_it_says():
    program = Program("BATCH_SIZE = 16\n")
    advised = BatchSize().advised({"BATCH_SIZE": Step(1.0, -1)})
    rng = np.random.default_rng(0)
    halved = np.mean([int(advised.propose(program, rng).code) == 8 for _ in range(400)])
    assert 0.7 < halved < 0.95, "mostly, not always, the advised way"


def test_a_run_learns_to_step_the_bad_learning_rate_down_and_further(tiny_spec, tmp_path):
    config = EvolveConfig(population=5, generations=3, elite=1, cx=0.0, model=0.0, stack=0.0, workers=2, seed=0,
                          mutators=("scale_constant",), seeds=1)
    settings = RunSettings(BAD_LR_SEED.read_text(), "bad_lr_seed.py", config, tiny_spec, Limits(threads=1))
    evolve(settings, tmp_path, load_mutators(["scale_constant"]))
    with RunStore.reader(tmp_path) as store:
        found = trials(store.evaluated())
    lr = [t for t in found if t.site == "LEARNING_RATE"]
    advice = step_sizes([(t.site, t.step, t.improved) for t in lr])["LEARNING_RATE"]
    assert advice.direction == -1 and advice.scale > 1, advice
    assert all(t.step is not None for t in lr)
    assert sum(t.step < 0 for t in lr) > len(lr) / 2, [t.step for t in lr]
