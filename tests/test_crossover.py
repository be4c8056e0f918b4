"""Crossover: site-homologous recombination of two parents' edits, with a child that always compiles."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evocode.crossover import crossover
from evocode.genome import Edit, Genome
from evocode.mutation import load_mutators, mutate

SEED = (Path(__file__).resolve().parent.parent / "seeds" / "train.py").read_text()
MUTATORS = load_mutators()
TWO_STEPS = "def f():\n    y = 1\n    z = 2\n"


@functools.cache
def descendant(seed: int, n_edits: int) -> Genome:
    return mutate(Genome(SEED), MUTATORS, np.random.default_rng(seed), n_edits=n_edits).genome


def edit(site: str, code: str) -> Edit:
    return Edit("test", site, code, f"{site} → {code!r}")


@settings(max_examples=10, deadline=None)
@given(seeds=st.tuples(st.sampled_from(range(4)), st.sampled_from(range(4)), st.integers(0, 10**6)))
def test_a_child_has_only_its_parents_edits_and_compiles(seeds):
    a, b = descendant(seeds[0], 3), descendant(seeds[1], 3)
    child, info = crossover(a, b, np.random.default_rng(seeds[2]))
    assert set(child.edits) <= set(a.edits) | set(b.edits)
    compile(child.code, "<child>", "exec")
    assert Genome.from_json(child.to_json()).code == child.code


def test_at_a_shared_site_the_child_takes_one_parents_edit():
    a = Genome(SEED, (edit("LEARNING_RATE", "6e-3"),))
    b = Genome(SEED, (edit("LEARNING_RATE", "1e-3"),))
    children = {crossover(a, b, np.random.default_rng(seed))[0].edits for seed in range(20)}
    assert children == {a.edits, b.edits}


def test_sites_only_one_parent_touched_are_kept_with_the_given_probability():
    a = Genome(SEED, (edit("LEARNING_RATE", "6e-3"),))
    b = Genome(SEED, (edit("DROPOUT", "0.1"),))
    assert crossover(a, b, np.random.default_rng(0), keep_unshared=1.0)[0].edits == a.edits + b.edits
    assert crossover(a, b, np.random.default_rng(0), keep_unshared=0.0)[0].edits == ()


def test_the_same_generator_state_gives_the_same_child():
    a, b = descendant(1, 3), descendant(2, 3)
    assert crossover(a, b, np.random.default_rng(7)) == crossover(a, b, np.random.default_rng(7))


def test_an_edit_whose_site_the_recombination_lost_is_dropped_and_counted():
    a = Genome(SEED, (edit("MLP.forward: {x = F.gelu(x)}", ""),))
    b = Genome(SEED, (edit("MLP.forward: F.gelu()", "F.silu(x)"),))
    child, info = crossover(a, b, np.random.default_rng(0), keep_unshared=1.0)
    assert child.edits == a.edits and info.dropped == b.edits and not info.fallback


def test_a_child_that_never_compiles_falls_back_to_the_first_parent():
    # Each parent compiles; together they declare a name global and then annotate it, which Python rejects.
    a = Genome(TWO_STEPS, (edit("f: {y = 1}", "global z"),))
    b = Genome(TWO_STEPS, (edit("f: {z = 2}", "z: int = 2"),))
    compile(a.code, "a", "exec"), compile(b.code, "b", "exec")
    child, info = crossover(a, b, np.random.default_rng(0), keep_unshared=1.0)
    assert child == a and info.fallback and info.failed_draws == 3


def test_parents_of_different_seeds_cannot_cross():
    with pytest.raises(ValueError, match="same seed"):
        crossover(Genome(SEED), Genome(TWO_STEPS), np.random.default_rng(0))
