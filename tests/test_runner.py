"""The runner: whatever a candidate program does, the driver gets a status and goes on.

Every test runs a real program in a real process at a tiny budget, then
checks the status and that nothing of the candidate is left running.
"""

from __future__ import annotations

import math
import re
import time


from conftest import children_alive, process_alive
from evocode.evaluation.runner import EvalResult, Limits, evaluate, last_error

TRAINING_LOOP = "    for step, (x, y) in enumerate(harness.batches(BATCH_SIZE, SEQ_LEN)):\n"


def variant(source: str, old: str, new: str) -> str:
    """The seed with one exact piece of text replaced; fails loudly if the seed changed shape."""
    assert source.count(old) == 1, f"the seed no longer contains exactly one {old!r}"
    return source.replace(old, new)


def run(source, spec, limits, seed=0) -> EvalResult:
    result = evaluate(source, spec, seed, limits)
    assert children_alive() == [], "a process of the candidate outlived its evaluation"
    return result


def test_the_seed_trains_and_gets_a_finite_score(seed_source, tiny_spec, limits):
    result = run(seed_source, tiny_spec, limits)
    assert result.status == "ok", result.reason + result.log_tail
    assert math.isfinite(result.val_bpb) and 0 < result.val_bpb < 8
    assert result.tokens == tiny_spec.budget
    assert result.num_params > 0 and result.peak_memory_mb > 0
    assert "status:           exported" in result.log_tail


def test_the_export_is_timed_apart_from_training_and_counted_with_scoring(seed_source, tiny_spec, limits):
    result = run(seed_source, tiny_spec, limits)
    assert result.status == "ok", result.reason + result.log_tail
    assert result.export_seconds > 0 and result.eval_seconds > 0
    assert result.scoring_seconds == result.export_seconds + result.eval_seconds
    assert result.train_seconds + result.scoring_seconds < result.wall_seconds


def test_same_program_and_seed_give_the_identical_score_and_another_seed_a_close_one(seed_source, tiny_spec, limits):
    first = run(seed_source, tiny_spec, limits, seed=1)
    again = run(seed_source, tiny_spec, limits, seed=1)
    other = run(seed_source, tiny_spec, limits, seed=2)
    assert first.val_bpb == again.val_bpb
    assert other.val_bpb != first.val_bpb
    assert abs(other.val_bpb - first.val_bpb) < 0.5


def test_a_syntax_error_is_invalid_and_starts_no_process(tiny_spec, limits):
    started = time.perf_counter()
    result = run("def broken(:\n    pass\n", tiny_spec, limits)
    assert result.status == "invalid"
    assert "SyntaxError" in result.reason
    assert time.perf_counter() - started < 1.0


def test_an_import_error_is_a_crash_naming_the_module(tiny_spec, limits):
    result = run("import no_such_module_for_evocode\n", tiny_spec, limits)
    assert result.status == "crash"
    assert result.reason == "ModuleNotFoundError: No module named 'no_such_module_for_evocode'"


def test_an_exception_mid_training_is_a_crash_with_its_last_line(seed_source, tiny_spec, limits):
    source = variant(seed_source, "        lr = lr_at(step, total_steps)\n",
                     "        if step == 1:\n            raise RuntimeError('boom at step 1')\n        lr = lr_at(step, total_steps)\n")
    result = run(source, tiny_spec, limits)
    assert result.status == "crash"
    assert result.reason == "RuntimeError: boom at step 1"
    assert result.val_bpb is None


def test_a_diverging_loss_is_nan(seed_source, tiny_spec, limits):
    source = variant(seed_source, "        loss.backward()\n", "        (loss * float('nan')).backward()\n")
    result = run(source, tiny_spec, limits)
    assert result.status == "nan"
    assert result.val_bpb is None


def test_an_infinite_loop_times_out_and_leaves_no_process(tiny_spec):
    result = run("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    pass\n", tiny_spec, Limits(timeout_s=2))
    assert result.status == "timeout"
    assert not process_alive(int(result.log_tail.split()[0]))


def test_a_child_that_sleeps_forever_dies_with_the_candidate(tiny_spec, limits):
    program = "import subprocess\nchild = subprocess.Popen(['sleep', '1000'])\nprint(child.pid, flush=True)\n"
    result = run(program, tiny_spec, limits)
    assert result.status == "crash"
    assert result.reason == "exited without calling harness.finish(model)"
    assert not process_alive(int(result.log_tail.split()[0]))


def test_a_child_left_by_a_hung_program_dies_at_the_timeout(tiny_spec):
    program = "import subprocess, time\nchild = subprocess.Popen(['sleep', '1000'])\nprint(child.pid, flush=True)\ntime.sleep(1000)\n"
    result = run(program, tiny_spec, Limits(timeout_s=2))
    assert result.status == "timeout"
    assert not process_alive(int(result.log_tail.split()[0]))


def test_a_memory_blow_up_is_oom_and_the_driver_lives_on(seed_source, tiny_spec):
    source = variant(seed_source, "    model = GPT().to(harness.device)\n",
                     "    hog = torch.ones(64, 2**30, dtype=torch.uint8)\n    model = GPT().to(harness.device)\n")
    result = run(source, tiny_spec, Limits(memory_mb=3072))
    assert result.status == "oom"
    assert "memory" in result.reason


def test_attention_that_sees_the_future_is_caught(seed_source, tiny_spec, limits):
    result = run(variant(seed_source, "is_causal=True", "is_causal=False"), tiny_spec, limits)
    assert result.status == "integrity"
    assert "sees the future" in result.reason
    assert result.val_bpb is None


def test_a_second_pass_over_the_data_is_caught(seed_source, tiny_spec, limits):
    """Running the training loop twice is one duplicated statement away."""
    source = variant(seed_source, "    harness.finish(model)\n",
                     "    for x, y in harness.batches(BATCH_SIZE, SEQ_LEN):\n        model(x)\n    harness.finish(model)\n")
    result = run(source, tiny_spec, limits)
    assert result.status == "integrity"
    assert "after the budget" in result.reason


def test_catching_the_budget_error_does_not_hide_the_overdraw(seed_source, tiny_spec, limits):
    source = variant(seed_source, "    harness.finish(model)\n",
                     "    try:\n        next(harness.batches(BATCH_SIZE, SEQ_LEN))\n    except harness.BudgetExhausted:\n        pass\n"
                     "    harness.finish(model)\n")
    result = run(source, tiny_spec, limits)
    assert result.status == "integrity"
    assert "after the budget" in result.reason


def test_reading_the_corpus_files_directly_is_caught_even_unsandboxed(seed_source, tiny_spec):
    source = variant(seed_source, "    harness.finish(model)\n",
                     "    import os\n    extra = open(os.path.join(os.environ['EVOCODE_CORPUS_DIR'], 'train.bin'), 'rb').read(4096)\n"
                     "    harness.finish(model)\n")
    result = run(source, tiny_spec, Limits(timeout_s=120, sandbox=False))
    assert result.status == "integrity"
    assert "data file" in result.reason


def test_a_forged_result_record_is_not_believed(tiny_spec, limits):
    """A program that never trains but writes a perfect score where the harness would."""
    program = (
        "import json, os, sys\n"
        "path = os.environ.get('EVOCODE_RESULT') or os.path.join(os.getcwd(), 'result.json')\n"
        "json.dump({'status': 'ok', 'val_bpb': 0.01, 'tokens': 0, 'budget': 1, 'corpus': 'x'}, open(path, 'w'))\n"
    )
    result = run(program, tiny_spec, limits)
    assert result.status == "integrity"
    assert result.val_bpb is None


def test_logits_of_the_wrong_shape_are_caught(seed_source, tiny_spec, limits):
    source = variant(seed_source, "        return self.lm_head(x)\n", "        return self.lm_head(x)[:, :-1]\n")
    result = run(source, tiny_spec, limits)
    assert result.status in ("integrity", "crash")
    assert result.val_bpb is None


def test_megabytes_of_output_keep_only_the_tail_and_nothing_hangs(tiny_spec):
    program = "for i in range(300_000):\n    print('line', i, 'x' * 60)\nprint('the very end')\n"
    limits = Limits(timeout_s=60, log_tail_bytes=4096)
    result = run(program, tiny_spec, limits)
    assert result.status == "crash"
    assert len(result.log_tail.encode()) <= 4096
    assert result.log_tail.rstrip().endswith("the very end")


def test_last_error_finds_the_exception_line_of_a_traceback():
    log = "step 1\nTraceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\nValueError: bad\n"
    assert last_error(log) == "ValueError: bad"


def test_a_result_survives_a_round_trip_through_a_dict(seed_source, tiny_spec, limits):
    result = run(variant(seed_source, "is_causal=True", "is_causal=False"), tiny_spec, limits)
    assert EvalResult.from_dict(result.as_dict()) == result
    assert re.search(r"future", " ".join(result.violations))
