"""The hidden test split: never seen by selection, scored once for the run's best and its seed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from conftest import REPO
from evocode.evaluation.runner import evaluate
from evocode.insight.holdout import stored_hidden_test
from evocode.outputs import best_of
from evocode.store import RunStore


def test_a_candidate_can_be_scored_on_the_hidden_split_and_it_is_another_text(seed_source, tiny_spec, limits):
    validation = evaluate(seed_source, tiny_spec, 0, limits)
    hidden = evaluate(seed_source, replace(tiny_spec, split="hidden"), 0, limits)
    assert validation.status == hidden.status == "ok"
    assert hidden.val_bpb != validation.val_bpb


def test_a_finished_run_keeps_its_best_and_seed_scored_on_the_hidden_split(finished_run):
    with RunStore.reader(finished_run) as store:
        held_out = stored_hidden_test(store)
        best = best_of(store.evaluated())
    assert held_out is not None and held_out.candidate == best.candidate.id
    assert held_out.gain is not None
    status = subprocess.run([sys.executable, "-m", "evocode", "status", str(finished_run)], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert f"hidden test:      gain {held_out.gain:+.6f}" in status
