"""The built-in mutators: each finds its site in the seed, writes a valid local change, keeps the program's
constraints, and proposes nothing for a script without its site."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from evocode.genome import apply_edits
from evocode.mutation import load_mutators
from evocode.program import Program

SEED = (Path(__file__).resolve().parent.parent / "seeds" / "train.py").read_text()
SEED_PROGRAM = Program(SEED)
BUILTINS = {m.name: m for m in load_mutators()}
OTHER_SCRIPT = '''import numpy as np

STEPS = "many"


def train(data):
    """Not a neural network: nothing here for the built-ins."""
    return np.mean(data)
'''


def proposals(name: str, count: int = 8) -> list:
    rng = np.random.default_rng(0)
    return [BUILTINS[name].propose(SEED_PROGRAM, rng) for _ in range(count)]


def constants_after(edit) -> dict:
    return Program(apply_edits(SEED, [edit])).constants()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_proposes_a_compiling_edit_to_the_seed(name):
    for edit in proposals(name, 3):
        assert edit is not None and edit.mutator == name and edit.description
        compile(apply_edits(SEED, [edit]), name, "exec")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_proposes_nothing_for_a_script_without_its_site(name):
    assert BUILTINS[name].propose(Program(OTHER_SCRIPT), np.random.default_rng(0)) is None


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_no_builtin_touches_the_harness_or_causal_masking(name):
    for edit in proposals(name):
        assert "harness" not in edit.code and "harness" not in edit.site and "is_causal=False" not in edit.code


def test_counts_keep_the_divisibility_the_script_asserts():
    for edit in proposals("count_constant", 12):
        constants = constants_after(edit)
        assert constants["N_EMBD"] % constants["N_HEAD"] == 0


def test_batch_against_sequence_length_keeps_tokens_per_step_and_the_context_length():
    for edit in proposals("batch_vs_seq_len"):
        constants = constants_after(edit)
        assert constants["BATCH_SIZE"] * constants["SEQ_LEN"] == 16 * 128 and constants["SEQ_LEN"] <= 128


def test_coupled_constants_move_together_by_their_rule_keeping_the_asserted_divisibility():
    seen = set()
    for edit in proposals("coupled_scale", 30):
        after = constants_after(edit)
        if edit.site == "(BATCH_SIZE, LEARNING_RATE)":
            factor = after["BATCH_SIZE"] / 16
            assert math.isclose(after["LEARNING_RATE"], 3e-3 * factor**0.5, rel_tol=0.03), edit.description
        else:
            assert edit.site == "(N_EMBD, INIT_STD)"
            factor = after["N_EMBD"] / 128
            assert math.isclose(after["INIT_STD"], 0.02 * factor**-0.5, rel_tol=0.03), edit.description
            assert after["N_EMBD"] % after["N_HEAD"] == 0
        assert factor in (0.5, 2)
        seen.add(edit.site)
    assert len(seen) == 2, "both couplings of the seed are proposed"


def test_scale_like_values_move_by_a_factor_and_read_nicely():
    for edit in proposals("scale_constant", 30):
        assert re.fullmatch(r"\d(\.\d)?e-\d+|0\.\d{1,3}", edit.code), edit.code
        assert edit.site in {"LEARNING_RATE", "WEIGHT_DECAY", "ADAM_EPS", "INIT_STD"}


def test_activation_swaps_the_mlp_nonlinearity():
    codes = {edit.code for edit in proposals("activation", 20)}
    assert codes == {"F.silu(x)", "F.relu(x)", "torch.square(F.relu(x))", 'F.gelu(x, approximate="tanh")'}


def test_activation_recognizes_relu_squared_as_one_activation():
    squared = Program(SEED.replace("F.gelu(x)", "torch.square(F.relu(x))"))
    edit = BUILTINS["activation"].propose(squared, np.random.default_rng(0))
    assert edit.site == "MLP.forward: torch.square()" and edit.description.startswith("ReLU² →")


def test_normalization_swaps_layernorm_for_rmsnorm_and_back():
    (edit, *_) = proposals("normalization")
    assert re.fullmatch(r"nn\.RMSNorm\(N_EMBD\)", edit.code)
    back = BUILTINS["normalization"].propose(Program(apply_edits(SEED, [edit])), np.random.default_rng(1))
    assert back.code.startswith("nn.") and "Norm(N_EMBD)" in back.code


def test_qk_norm_is_added_then_removed_keeping_the_causal_flag():
    (edit, *_) = proposals("qk_norm")
    assert "F.rms_norm(q, (q.size(-1),))" in edit.code and "is_causal=True" in edit.code
    normed = apply_edits(SEED, [edit])
    removed = BUILTINS["qk_norm"].propose(Program(normed), np.random.default_rng(0))
    assert apply_edits(normed, [removed]) == SEED


def test_schedule_shape_changes_the_decay_of_the_learning_rate():
    codes = {edit.code for edit in proposals("schedule_shape", 20)}
    assert codes == {"1 - min(1.0, progress)", "min(1.0, 5 * (1 - min(1.0, progress)))"}


def test_z_loss_is_added_to_the_training_loss_then_removed():
    (edit, *_) = proposals("z_loss")
    assert "torch.logsumexp(logits.view(-1, logits.size(-1)), dim=-1).pow(2).mean()" in edit.code
    with_z = apply_edits(SEED, [edit])
    removed = BUILTINS["z_loss"].propose(Program(with_z), np.random.default_rng(0))
    assert apply_edits(with_z, [removed]) == SEED


def test_label_smoothing_sets_the_keyword_of_the_training_cross_entropy():
    (edit, *_) = proposals("label_smoothing")
    assert re.search(r"label_smoothing=0\.\d+\)$", edit.code) and edit.site == "main: F.cross_entropy()"


def test_statement_operators_delete_or_duplicate_only_residual_and_single_call_updates():
    deleted = {edit.site for edit in proposals("delete_statement", 30)}
    duplicated = {edit.site for edit in proposals("duplicate_statement", 10)}
    assert duplicated == {"Block.forward: {x = x + self.attn(self.ln_1(x))}", "Block.forward: {x = x + self.mlp(self.ln_2(x))}"}
    assert duplicated < deleted and "MLP.forward: {x = F.gelu(x)}" in deleted
    assert not any(".view(" in site or "harness" in site for site in deleted)


def test_residual_init_scale_changes_only_the_divisor():
    for edit in proposals("residual_init_scale"):
        assert edit.code.startswith("INIT_STD / ") and "N_LAYER" in edit.code
