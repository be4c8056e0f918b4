"""Genome: edits at named sites, applied with LibCST, serialized losslessly, identified by normalized code."""

from __future__ import annotations

import libcst as cst
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SEED_SCRIPT
from evocode.genome import Edit, EditError, Genome, SiteNotFound, apply_applicable_edits, apply_edit, apply_edits, code_hash
from evocode.mutation import load_mutators, mutate
from evocode.program import Program

SCRIPT = '''"""A toy training script."""
import torch.nn.functional as F

LR = 3e-3  # the peak learning rate
BATCH = 16
SEQ = 128


def forward(x):
    # the MLP
    x = F.gelu(x)
    x = x + F.relu(x)
    return x
'''


def edit(site: str, code: str) -> Edit:
    return Edit("test", site, code, f"{site} → {code}")


def test_an_expression_edit_rewrites_its_site_and_keeps_the_line_comment():
    assert apply_edits(SCRIPT, [edit("LR", "6e-3")]) == SCRIPT.replace("LR = 3e-3", "LR = 6e-3")


def test_a_call_site_is_addressed_by_scope_and_callee():
    code = apply_edits(SCRIPT, [edit("forward: F.gelu()", "F.silu(x)")])
    assert code == SCRIPT.replace("F.gelu(x)", "F.silu(x)")


def test_an_operator_written_at_a_call_site_stays_one_operand():
    code = apply_edits(SCRIPT, [edit("forward: F.relu()", "x * 2")])
    assert "x = x + (x * 2)" in code


def test_a_compound_site_writes_each_value_of_the_tuple():
    code = apply_edits(SCRIPT, [edit("(BATCH, SEQ)", "32, 64")])
    assert "BATCH = 32\nSEQ = 64\n" in code


def test_a_statement_site_is_replaced_by_the_statements_of_the_code():
    duplicated = apply_edits(SCRIPT, [edit("forward: {x = x + F.relu(x)}", "x = x + F.relu(x)\nx = x + F.relu(x)\n")])
    assert duplicated.count("    x = x + F.relu(x)\n") == 2


def test_edits_of_module_level_constants_written_in_one_pass_make_what_writing_them_in_turn_makes():
    edits = [edit("LR", "6e-3"), edit("BATCH", "32"), edit("forward: F.gelu()", "F.silu(x)"), edit("SEQ", "64"),
             edit("LR", "1e-3")]
    one_by_one = cst.parse_module(SCRIPT)
    for e in edits:
        one_by_one = apply_edit(one_by_one, e)
    assert apply_edits(SCRIPT, edits) == one_by_one.code
    assert "LR = 1e-3" in one_by_one.code, "a constant edited twice keeps the later value"
    code, applied, skipped = apply_applicable_edits(SCRIPT, [edit("LR", "1e-3"), edit("NOT_THERE", "1"), edit("SEQ", "64")])
    assert skipped == (edit("NOT_THERE", "1"),) and "LR = 1e-3" in code and "SEQ = 64" in code


def test_long_random_edit_lists_make_the_same_program_however_their_edits_are_grouped():
    seed = Genome(SEED_SCRIPT.read_text())
    rng = np.random.default_rng(3)
    mutators = load_mutators()
    for _ in range(12):
        genome = mutate(seed, mutators, rng, n_edits=8).genome
        one_by_one = cst.parse_module(seed.seed_source)
        for e in genome.edits:
            one_by_one = apply_edit(one_by_one, e)
        assert apply_edits(seed.seed_source, genome.edits) == one_by_one.code


def test_deleting_a_statement_keeps_the_rest_of_the_body():
    code = apply_edits(SCRIPT, [edit("forward: {x = F.gelu(x)}", "")])
    assert "gelu" not in code and "    return x\n" in code


def test_replacing_a_statement_keeps_the_comment_above_it():
    code = apply_edits(SCRIPT, [edit("forward: {x = F.gelu(x)}", "x = F.silu(x)")])
    assert "    # the MLP\n    x = F.silu(x)\n" in code


def test_the_nth_match_of_an_address_is_suffixed():
    program = Program("def f(x):\n    x = g(x)\n    x = g(x)\n")
    assert ["f: {x = g(x)}", "f: {x = g(x)} #2"] == [a for a in program.sites if a.startswith("f: {")]


def test_addresses_do_not_depend_on_line_numbers_or_formatting():
    moved = "# a new header comment\n\n" + SCRIPT.replace("x = F.gelu(x)", "x = F.gelu( x )")
    assert list(Program(moved).sites) == list(Program(SCRIPT).sites)


def test_an_edit_whose_site_is_missing_raises_site_not_found():
    with pytest.raises(SiteNotFound):
        apply_edits(SCRIPT, [edit("WEIGHT_DECAY", "0.1")])


def test_an_edit_whose_code_does_not_parse_raises_edit_error():
    with pytest.raises(EditError):
        apply_edits(SCRIPT, [edit("LR", "3e-3 +")])


def test_a_compound_site_needs_one_value_per_site():
    with pytest.raises(EditError):
        apply_edits(SCRIPT, [edit("(BATCH, SEQ)", "32")])


def test_apply_applicable_edits_skips_edits_whose_site_is_missing():
    edits = [edit("forward: {x = F.gelu(x)}", ""), edit("forward: F.gelu()", "F.silu(x)"), edit("LR", "1e-3")]
    code, applied, skipped = apply_applicable_edits(SCRIPT, edits)
    assert skipped == (edits[1],) and applied == (edits[0], edits[2])
    assert code == apply_edits(SCRIPT, applied)


def test_a_genome_is_the_seed_plus_its_edits():
    genome = Genome(SCRIPT).with_edits(edit("LR", "6e-3"), edit("BATCH", "8"))
    assert genome.code == apply_edits(SCRIPT, genome.edits)
    assert genome.edits[0].mutator == "test"


def test_a_genome_survives_json_with_its_edits_and_code():
    genome = Genome(SCRIPT).with_edits(edit("LR", "6e-3"), edit("forward: {x = F.gelu(x)}", ""))
    again = Genome.from_json(genome.to_json())
    assert again == genome and again.code == genome.code


def test_the_hash_ignores_comments_and_formatting():
    reformatted = SCRIPT.replace("LR = 3e-3  # the peak learning rate", "LR=0.003").replace("    # the MLP\n", "\n")
    assert code_hash(reformatted) == code_hash(SCRIPT)


def test_the_hash_distinguishes_a_changed_value():
    assert code_hash(SCRIPT.replace("BATCH = 16", "BATCH = 17")) != code_hash(SCRIPT)


def test_the_hash_counts_docstrings_as_code():
    assert code_hash(SCRIPT.replace("A toy", "A small")) != code_hash(SCRIPT)


@settings(max_examples=40, deadline=None)
@given(
    comment=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    blank_lines=st.integers(0, 3),
    spaces=st.integers(0, 3),
)
def test_the_hash_ignores_any_comment_blank_lines_and_spacing(comment, blank_lines, spaces):
    pad = " " * spaces
    variant = SCRIPT.replace("BATCH = 16", f"BATCH{pad}={pad}16  # {comment}").replace("\n\ndef", "\n" * blank_lines + "\n\ndef")
    assert code_hash(variant) == code_hash(SCRIPT)


@settings(max_examples=40, deadline=None)
@given(value=st.integers(0, 10_000).filter(lambda v: v != 16))
def test_the_hash_distinguishes_any_other_value(value):
    assert code_hash(SCRIPT.replace("BATCH = 16", f"BATCH = {value}")) != code_hash(SCRIPT)
