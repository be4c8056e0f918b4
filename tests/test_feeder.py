"""Training tokens are served and counted by the worker: the count in the record is never the candidate's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import children_alive
from evocode.evaluation.feeder import REFUSED, Ledger
from evocode.evaluation.runner import evaluate

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
