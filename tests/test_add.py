"""`add`: a hand-written variant joins the run's next generation as a candidate of origin `human`."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SEED_SCRIPT, TINY_RUN, error_lines
from evocode.genome import PROGRAM_SITE, Genome, edits_from_json
from evocode.store import RunStore

VARIANT = SEED_SCRIPT.read_text().replace("LEARNING_RATE = 3e-3", "LEARNING_RATE = 2e-3  # a person's hunch")


def evocode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evocode", *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def continued(finished_run, tmp_path_factory):
    """The finished one-generation run, a variant added, then continued for one more generation."""
    run_dir = tmp_path_factory.mktemp("add") / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("evocode.lock"))
    variant = run_dir.parent / "hunch.py"
    variant.write_text(VARIANT)
    added = evocode("add", str(run_dir), str(variant))
    assert added.returncode == 0, added.stderr
    more = [*TINY_RUN[:TINY_RUN.index("--generations")], "--generations", "2", *TINY_RUN[TINY_RUN.index("--generations") + 2:]]
    result = evocode("evolve", str(SEED_SCRIPT), *more, "--run-dir", str(run_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    with RunStore.reader(run_dir) as store:
        return run_dir, store.evaluated()


def test_the_next_generation_evaluates_the_variant_as_a_human_candidate_of_the_seed(continued):
    _, evaluated = continued
    (human,) = [e for e in evaluated if e.candidate.origin == "human"]
    assert human.candidate.generation == 2 and human.candidate.parents == ("g000-000",)
    assert human.candidate.code == VARIANT and human.result.status == "ok"


def test_the_variants_genome_is_one_edit_that_rewrites_the_seed_into_it(continued):
    _, evaluated = continued
    (human,) = [e for e in evaluated if e.candidate.origin == "human"]
    (edit,) = edits_from_json(human.candidate.genome)
    assert edit.site == PROGRAM_SITE and edit.description == "hand-written hunch.py"
    assert Genome(SEED_SCRIPT.read_text(), (edit,)).code == VARIANT


def test_the_variant_takes_a_childs_place_not_an_extra_one(continued):
    _, evaluated = continued
    assert len([e for e in evaluated if e.candidate.generation == 2]) == 4 - 2


def test_a_program_the_run_already_has_is_refused_in_one_line(finished_run):
    result = evocode("add", str(finished_run), str(SEED_SCRIPT))
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "already has this program" in result.stderr


def test_a_variant_that_does_not_parse_is_refused_in_one_line(finished_run, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    result = evocode("add", str(finished_run), str(broken))
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "does not parse" in result.stderr
