"""One mutation step: valid, local, deterministic edits; failing mutators skipped by name; where mutators come from."""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libcst.metadata import PositionProvider

from evocode.genome import Edit, Genome
from evocode.mutation import CATEGORIES, Mutator, format_number, load_mutators, load_spec, mutate, select_mutators
from evocode.program import Program, resolve

PLUGINS = Path(__file__).parent / "plugins"
SEED = (Path(__file__).resolve().parent.parent / "seeds" / "train.py").read_text()
BUILTINS = load_mutators()


def site_lines(source: str, address: str) -> set[int]:
    """0-based line numbers the site (or sites) of an address span in the source."""
    program = Program(source)
    positions = program.metadata(PositionProvider)
    return {
        line
        for site in resolve(program.sites, address)
        for line in range(positions[site.node].start.line - 1, positions[site.node].end.line)
    }


def changed_lines(before: str, after: str) -> set[int]:
    """0-based lines of `before` that a line diff replaces or deletes, or next to which it inserts."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    lines = set()
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal":
            lines |= set(range(i1, i2)) if i2 > i1 else {i1 - 1}
    return lines


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_mutated_program_compiles_and_survives_json(seed):
    outcome = mutate(Genome(SEED), BUILTINS, np.random.default_rng(seed), n_edits=3)
    assert len(outcome.edits) == 3
    compile(outcome.genome.code, "<child>", "exec")
    assert Genome.from_json(outcome.genome.to_json()).code == outcome.genome.code


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_mutation_changes_no_code_outside_its_site(seed):
    outcome = mutate(Genome(SEED), BUILTINS, np.random.default_rng(seed))
    (edit,) = outcome.edits
    assert changed_lines(SEED, outcome.genome.code) <= site_lines(SEED, edit.site)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_same_generator_state_gives_the_same_edits(seed):
    first = mutate(Genome(SEED), BUILTINS, np.random.default_rng(seed), n_edits=2)
    second = mutate(Genome(SEED), BUILTINS, np.random.default_rng(seed), n_edits=2)
    assert first.edits == second.edits


def test_mutation_keeps_the_parents_edits_and_adds_new_ones():
    parent = mutate(Genome(SEED), BUILTINS, np.random.default_rng(1)).genome
    child = mutate(parent, BUILTINS, np.random.default_rng(2)).genome
    assert child.edits[:1] == parent.edits and len(child.edits) == 2


@pytest.mark.parametrize("seed", range(20))
def test_the_edits_of_one_mutation_are_at_distinct_sites(seed):
    weights = np.eye(len(BUILTINS))[seed % len(BUILTINS)] + 1e-3  # even when one mutator is nearly always tried first
    edits = mutate(Genome(SEED), BUILTINS, np.random.default_rng(seed), n_edits=4, weights=weights).edits
    assert len(edits) == 4 and len({e.site for e in edits}) == 4, [e.description for e in edits]


def test_no_edit_comes_back_when_no_mutator_has_a_site():
    outcome = mutate(Genome("print('hello')\n"), BUILTINS, np.random.default_rng(0))
    assert outcome.edits == () and outcome.failures == () and outcome.genome == Genome("print('hello')\n")


@pytest.mark.parametrize(
    "name, error",
    [
        ("raises", "RuntimeError: this plugin has a bug"),
        ("writes_broken_code", "EditError"),
        ("writes_uncompilable_code", "SyntaxError"),
        ("touches_harness", "must not touch the harness"),
    ],
)
def test_a_failing_mutator_is_skipped_with_a_warning_naming_it(name, error, caplog):
    bad = load_spec(f"{PLUGINS / 'misbehaving.py'}:{''.join(p.title() for p in name.split('_'))}").mutator
    with caplog.at_level(logging.WARNING, logger="evocode.mutation"):
        outcome = mutate(Genome(SEED), [bad, *load_mutators(["dropout", "scale_constant"])], np.random.default_rng(0), n_edits=3,
                         weights=[1.0, 1e-6, 1e-6])  # the bad one is tried first
    assert len(outcome.edits) == 3 and {e.mutator for e in outcome.edits} <= {"dropout", "scale_constant"}
    assert outcome.failures and all(f.mutator == name and error in f.error for f in outcome.failures)
    assert f"mutator {name} skipped" in caplog.text


def test_there_are_at_least_twelve_builtins_over_all_four_categories():
    assert len(BUILTINS) >= 12
    assert {m.category for m in BUILTINS} == set(CATEGORIES)


def test_every_builtin_states_its_hypothesis():
    assert all(len(m.hypothesis) > 40 for m in BUILTINS)


def test_mutators_come_sorted_by_name_and_marked_built_in():
    entries = select_mutators()
    assert [e.mutator.name for e in entries] == sorted(e.mutator.name for e in entries)
    assert {e.source.split()[0] for e in entries if e.mutator.name in {m.name for m in BUILTINS}} == {"built-in"}


def test_a_selection_picks_by_name_and_by_category():
    chosen = load_mutators(["activation", "data"])
    assert {m.name for m in chosen} == {"activation"} | {m.name for m in BUILTINS if m.category == "data"}


def test_an_unknown_selection_is_an_error_that_lists_the_known_names():
    with pytest.raises(ValueError, match="activation"):
        load_mutators(["no_such_mutator"])


def test_a_module_spec_names_a_mutator_class(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    (entry,) = select_mutators(["misbehaving:Raises"])
    assert entry.mutator.name == "raises" and entry.source == "module misbehaving:Raises"


def test_a_spec_that_is_not_a_mutator_is_rejected():
    with pytest.raises(ValueError, match="not a Mutator"):
        load_spec("evocode.genome:Edit")


def test_builtin_selects_the_shipped_mutators_and_a_plugin_joins_them_in_one_word():
    builtins = select_mutators(["builtin"])
    assert builtins and all(e.source.startswith("built-in mutators.") for e in builtins)
    with_plugin = select_mutators(["builtin", f"{PLUGINS / 'misbehaving.py'}:Raises"])
    assert [e.mutator.name for e in with_plugin] == sorted([e.mutator.name for e in builtins] + ["raises"])


def test_all_selects_every_registered_mutator():
    assert [e.mutator.name for e in select_mutators(["all"])] == [e.mutator.name for e in select_mutators()]


def test_a_plugin_may_not_reuse_a_builtin_name():
    with pytest.raises(ValueError, match="two mutators named 'activation'"):
        select_mutators(["mutators.layers:Activation"])


def readme_example() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Write your own mutator", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]


def test_the_readme_example_is_short_and_runs_as_a_file_plugin(tmp_path):
    code = readme_example()
    assert len(code.splitlines()) <= 30
    (tmp_path / "my_mutators.py").write_text(code)
    (entry,) = select_mutators([f"{tmp_path / 'my_mutators.py'}:WiderMLP"])
    outcome = mutate(Genome(SEED), [entry.mutator], np.random.default_rng(0))
    assert entry.source.startswith("path ") and outcome.edits[0].mutator == "wider_mlp"
    assert "MLP_RATIO = 6" in outcome.genome.code


@pytest.mark.parametrize(
    "value, text",
    [(3e-3, "3e-3"), (0.006000000000000001, "6e-3"), (0.95, "0.95"), (1e-8, "1e-8"), (0.1, "0.1"), (0.0, "0.0"), (128, "128"), (2.4e-4, "2.4e-4")],
)
def test_numbers_are_written_as_a_person_writes_them(value, text):
    assert format_number(value) == text


def test_a_mutator_that_returns_something_else_than_an_edit_is_a_failure():
    class ReturnsText(Mutator):
        """Returns a string."""

        name = "returns_text"
        category = "data"

        def propose(self, program, rng):
            return "LEARNING_RATE = 1"

    outcome = mutate(Genome(SEED), [ReturnsText()], np.random.default_rng(0))
    assert outcome.edits == () and "not an Edit" in outcome.failures[0].error


def test_an_edit_must_carry_its_mutators_name():
    class Impostor(Mutator):
        """Claims another mutator's edit."""

        name = "impostor"
        category = "data"

        def propose(self, program, rng):
            return Edit("dropout", "DROPOUT", "0.1", "DROPOUT 0.0 → 0.1")

    assert mutate(Genome(SEED), [Impostor()], np.random.default_rng(0)).failures[0].mutator == "impostor"
