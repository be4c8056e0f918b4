"""Training tokens are served and counted by the worker: the count in the record is never the candidate's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import children_alive
from evocode.evaluation import feeder
from evocode.evaluation.feeder import REFUSED, Ledger
from evocode.evaluation.runner import Limits, evaluate

BEFORE_FINISH = "    harness.finish(model)\n"


def before_finish(seed_source: str, code: str) -> str:
    return seed_source.replace(BEFORE_FINISH, code + BEFORE_FINISH)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_the_token_count_comes_from_the_feeder_not_from_the_candidate(seed_source, tiny_spec, limits, warm):
    result = evaluate(before_finish(seed_source, "    harness._Run.tokens = 0\n"), tiny_spec, 0, limits, warm=warm)
    assert result.status == "ok", result.reason
    assert result.tokens == tiny_spec.budget


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_raising_the_budget_and_the_counters_inside_gets_no_more_tokens(seed_source, tiny_spec, limits, warm):
    attack = (
        "    harness.budget *= 10\n"
        "    harness._Run.tokens = 0\n"
        "    for _ in range(3):\n"
        "        try:\n"
        "            for x, y in harness.batches(BATCH_SIZE, SEQ_LEN):\n"
        "                model(x)\n"
        "        except harness.BudgetExhausted:\n"
        "            pass\n"
    )
    result = evaluate(before_finish(seed_source, attack), tiny_spec, 0, limits, warm=warm)
    assert result.status == "integrity" and "after the budget" in result.reason
    assert result.tokens == tiny_spec.budget


def test_asking_the_feeder_directly_for_a_batch_the_harness_would_refuse_is_caught(seed_source, tiny_spec, limits):
    attack = "    harness._source.draw(10**6, 10**6)\n"
    start = "    model = GPT().to(harness.device)\n"
    result = evaluate(seed_source.replace(start, attack + start), tiny_spec, 0, limits)
    assert result.status == "integrity" and "outside what batches() allows" in result.reason
    assert result.tokens == tiny_spec.budget


def test_a_candidate_that_floods_the_feeder_and_never_reads_does_not_stall_its_worker(seed_source, tiny_spec, limits):
    flood = (
        "import os, struct\nfrom evocode import harness\n"
        "for _ in range(40_000):\n"
        "    os.write(harness._source.requests, struct.pack('<ii', 1, 128))\n"
        "print('flooded', flush=True)\n"
    )
    started = time.monotonic()
    flooded = evaluate(flood, tiny_spec, 0, limits)
    assert "flooded" in flooded.log_tail and flooded.status == "integrity"
    assert time.monotonic() - started < 60
    assert evaluate(seed_source, tiny_spec, 0, limits).status == "ok"
    assert children_alive() == []


def ledger(budget: int = 1000, seed: int = 0) -> Ledger:
    return Ledger(np.arange(10_000, dtype=np.uint8), budget, seed, context_length=128)


def test_a_ledger_spends_the_budget_exactly_then_refuses():
    book = ledger(budget=1000)
    granted = [book.draw(3, 100)[0] for _ in range(5)]
    assert granted == [3, 3, 3, 1, 0]
    assert book.draw(3, 100)[0] == REFUSED
    assert book.report() == {"tokens": 1000, "violations": ["asked for training tokens after the budget of 1000 was spent"]}


def test_the_same_seed_and_requests_give_the_same_windows():
    assert ledger(seed=5).draw(4, 16) == ledger(seed=5).draw(4, 16) != ledger(seed=6).draw(4, 16)


class Clock:
    """time.monotonic for a ledger, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def paced(monkeypatch, draws: int, every_s: float, start_s: float = 0.0, budget: int = 100_000) -> tuple[Ledger, Clock]:
    """A ledger that has served `draws` batches of 100 tokens, one every every_s seconds after start_s of silence."""
    clock = Clock()
    monkeypatch.setattr(feeder.time, "monotonic", clock)
    book = ledger(budget=budget)
    clock.now = start_s
    for _ in range(draws):
        clock.now += every_s
        book.draw(1, 100)
    return book, clock


def test_a_candidate_whose_pace_needs_far_more_than_its_limit_is_given_up_once_a_tenth_of_the_limit_has_passed(monkeypatch):
    # 100 tokens a second: the 100,000-token budget needs 1,000 s against a limit of 100 s.
    book, clock = paced(monkeypatch, draws=10, every_s=0.9)
    assert book.projected_seconds(limit_s=100) is None  # 9 s in: too early to judge
    clock.now = 10.0
    assert book.projected_seconds(limit_s=100) == pytest.approx(10 + (100_000 - 1_000) / (800 / 7.2))


def test_a_candidate_a_little_over_its_pace_is_left_to_its_limit(monkeypatch):
    # 1,000 tokens a second for 100,000 tokens: 100 s against a limit of 90 s, within the margin.
    book, clock = paced(monkeypatch, draws=400, every_s=0.1)  # 40 s in, 40,000 tokens served
    assert book.projected_seconds(limit_s=90) is None


def test_a_slow_start_is_not_held_against_a_fast_pace(monkeypatch):
    # 60 s before the first batch (a compile, say), then 1,000 tokens a second: done by about 160 s of 200.
    book, clock = paced(monkeypatch, draws=10, every_s=0.1, start_s=60.0)
    assert book.projected_seconds(limit_s=200) is None


def test_a_slow_first_step_is_not_held_against_a_fast_pace(monkeypatch):
    # The first step takes 30 s (a compile inside it), then 1,000 tokens a second: done by about 130 s of 120 × 1.2.
    book, clock = paced(monkeypatch, draws=1, every_s=0.0)
    clock.now = 30.0
    for _ in range(feeder.PACE_DRAWS):
        clock.now += 0.1
        book.draw(1, 100)
    assert book.projected_seconds(limit_s=120) is None
    clock.now += 0.1
    book.draw(1, 100)
    assert book.projected_seconds(limit_s=120) is None


def test_too_few_draws_say_nothing_and_a_spent_budget_has_nothing_left_to_project(monkeypatch):
    book, clock = paced(monkeypatch, draws=feeder.PACE_DRAWS + 1, every_s=10.0)
    assert book.projected_seconds(limit_s=100) is None
    spent, clock = paced(monkeypatch, draws=12, every_s=10.0, budget=1_000)
    spent.draw(1, 100)
    assert spent.closed and spent.projected_seconds(limit_s=100) is None


SLOW = """
import time
from evocode import harness
for x, y in harness.batches(1, 16):
    time.sleep(0.2)
print("trained on every batch", flush=True)
"""


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_candidate_that_cannot_finish_in_time_is_stopped_early_as_a_timeout(tiny_spec, warm):
    """4,096 tokens 16 at a time, one draw per 0.2 s, need about 50 s; the limit is 20 s."""
    result = evaluate(SLOW, tiny_spec, 0, Limits(timeout_s=20), warm=warm)
    assert result.status == "timeout"
    assert result.reason.startswith("stopped early: at its pace it would need about ") and "over the 20 s" in result.reason
    assert "trained on every batch" not in result.log_tail
    assert 0 < result.tokens < tiny_spec.budget
    assert children_alive() == []
