"""The harness a training script imports, and the `eval` command around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SEED_SCRIPT
from evocode.data import CorpusError, prepare_corpus


def run_python(args, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300)


def harness_program(body: str, **env) -> subprocess.CompletedProcess:
    return run_python(["-c", "from evocode import harness\n" + textwrap.dedent(body)], **env)


def test_the_seed_runs_by_hand_and_prints_its_summary():
    done = run_python([str(SEED_SCRIPT)], EVOCODE_BUDGET=4096, EVOCODE_EVAL_TOKENS=1024)
    assert done.returncode == 0, done.stderr
    summary = dict(line.split(":", 1) for line in done.stdout.split("---\n", 1)[1].splitlines())
    assert summary["status"].strip() == "ok"
    assert 0 < float(summary["val_bpb"]) < 8
    assert int(summary["num_tokens"]) == 4096


def test_batches_spend_the_budget_exactly_with_a_smaller_last_batch():
    done = harness_program(
        """
        shapes = [tuple(x.shape) for x, y in harness.batches(3, 100)]
        print(shapes)
        """,
        EVOCODE_BUDGET=1000,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(3, 100), (3, 100), (3, 100), (1, 100)]"


def test_targets_are_the_inputs_shifted_by_one():
    done = harness_program(
        """
        x, y = next(harness.batches(2, 16))
        print(bool((x[:, 1:] == y[:, :-1]).all()), x.dtype, x.device)
        """
    )
    assert done.stdout.split() == ["True", "torch.int64", "cpu"]


def test_a_sequence_longer_than_the_context_is_refused_with_a_clear_error():
    done = harness_program("next(harness.batches(2, 129))", EVOCODE_CONTEXT_LENGTH=128)
    assert done.returncode != 0
    assert "seq_len must be between 1 and the harness context_length 128, got 129" in done.stderr


def test_asking_again_after_the_budget_is_spent_raises_budget_exhausted():
    done = harness_program(
        """
        for _ in harness.batches(2, 10):
            pass
        next(harness.batches(2, 10))
        """,
        EVOCODE_BUDGET=100,
    )
    assert "BudgetExhausted: the token budget of 100 is spent" in done.stderr


def test_the_same_seed_draws_the_same_batches_and_another_seed_others():
    program = "print(next(harness.batches(2, 8))[0].tolist())"
    first, again, other = (harness_program(program, EVOCODE_SEED=s).stdout for s in (5, 5, 6))
    assert first == again != other


def test_a_data_file_gives_a_corpus_with_its_own_fingerprint(tmp_path):
    text = tmp_path / "shakespeare.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 2000)
    corpus = prepare_corpus(text)
    assert corpus.fingerprint != prepare_corpus().fingerprint
    assert corpus.train_bytes + corpus.val_bytes == text.stat().st_size
    assert corpus.val_bytes > 0


def test_a_data_file_too_small_to_validate_on_is_refused(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("hello\n" * 10)
    with pytest.raises(CorpusError, match="use a text file of at least"):
        prepare_corpus(text)


def test_eval_prints_the_result_and_exits_zero_on_ok():
    done = run_python(["-m", "evocode", "eval", str(SEED_SCRIPT), "--budget", "4096", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and result["val_bpb"] > 0


def test_eval_of_a_broken_script_exits_nonzero_with_a_one_line_reason(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('no model here')\n")
    done = run_python(["-m", "evocode", "eval", str(script), "--budget", "4096"])
    assert done.returncode == 1
    assert done.stderr.strip() == f"evocode: {script}: crash: no model here"


def test_eval_of_a_missing_data_file_says_what_to_pass():
    done = run_python(["-m", "evocode", "eval", str(SEED_SCRIPT), "--data", "/nonexistent.txt"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "evocode eval: error: argument --data: /nonexistent.txt: no such file; pass the path of a text file"
    )
