"""`export --git`: the best's path from the seed as a git repository, one commit per edit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from evocode.genome import edits_from_json
from evocode.outputs import best_of
from evocode.store import RunStore


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def export(run_dir, destination) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evocode", "export", str(run_dir), "--git", str(destination)],
                          cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    destination = tmp_path_factory.mktemp("export") / "repo"
    result = export(finished_run, destination)
    assert result.returncode == 0, result.stderr
    return destination


def best_edits(run_dir):
    with RunStore.reader(run_dir) as store:
        return edits_from_json(best_of(store.evaluated()).candidate.genome)


def test_the_last_commit_holds_exactly_best_py(finished_run, exported):
    """best.py is the program under a header of comments (its score, edits and how to reproduce it)."""
    assert git(exported, "status", "--porcelain") == ""
    program = git(exported, "show", "HEAD:train.py")
    best = (finished_run / "best.py").read_text()
    header = best[: len(best) - len(program)]
    assert best.endswith(program)
    assert all(line.startswith("#") for line in header.splitlines())


def test_there_is_one_commit_per_edit_after_the_seed_in_edit_order(finished_run, exported):
    subjects = git(exported, "log", "--reverse", "--format=%s").splitlines()
    assert subjects == ["seed: train.py as written by hand"] + [edit.description for edit in best_edits(finished_run)]


def test_each_edit_commit_says_where_the_edit_applies_and_what_the_run_measured(finished_run, exported):
    bodies = git(exported, "log", "--reverse", "--format=%B%x00").split("\x00")[1:-1]
    for edit, body in zip(best_edits(finished_run), bodies):
        assert f"Mutator: {edit.mutator} at {edit.site}" in body
        assert "Measured: " in body


def test_the_first_commit_is_the_seed_as_written(exported):
    first = git(exported, "rev-list", "--max-parents=0", "HEAD").strip()
    assert git(exported, "show", f"{first}:train.py") == (REPO / "seeds" / "train.py").read_text()


def test_export_refuses_a_directory_that_is_not_empty_and_leaves_it_alone(finished_run, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = export(finished_run, tmp_path)
    assert result.returncode == 2 and "not an empty directory" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
