"""`export --git`: a candidate's edit path as a git repository, one commit per edit.

The first commit is the seed script as written by hand; each following commit
applies the next edit of the candidate's edit list, so the last commit's file
is the candidate's program, byte for byte. Each message says what the edit
does, why the mutator proposed it (its hypothesis), and what the run measured:
a step whose program the run evaluated gets its val_bpb and the Δ against the
last measured step before it. A user can `git log -p` the path from the seed
to the winner and cherry-pick single edits into their own script.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

from evocode.genome import edits_from_json
from evocode.insight.finished_run import FinishedRun
from evocode.insight.lineage import Step, edit_path
from evocode.store import Evaluated

# The commits are evocode's work, not the user's: a fixed identity, whatever git is configured with.
_IDENTITY = {"GIT_AUTHOR_NAME": "evocode", "GIT_AUTHOR_EMAIL": "evocode@localhost",
             "GIT_COMMITTER_NAME": "evocode", "GIT_COMMITTER_EMAIL": "evocode@localhost"}


class ExportError(ValueError):
    """The destination cannot take the repository."""


def _measured(e: Evaluated, seed: int) -> str:
    return f"val_bpb {e.result.val_bpb:.6f} ({e.candidate.id}, evaluation seed {seed})"


def step_message(step: Step, previous: Evaluated, seed: int, hypothesis: str) -> str:
    """A commit message: the edit's description, its hypothesis, where it applies, and the measured Δ if the run measured it."""
    lines = [step.edit.description, "", f"Mutator: {step.edit.mutator} at {step.edit.site}"]
    if hypothesis:
        lines.append(f"Hypothesis: {' '.join(hypothesis.split())}")
    if step.measured is None:
        lines.append("Measured: not on its own; the run evaluated this edit only together with the edits after it.")
    else:
        delta = step.measured.result.val_bpb - previous.result.val_bpb
        lines.append(f"Measured: {_measured(step.measured, seed)}, Δ {delta:+.6f} against {previous.candidate.id}.")
    return "\n".join(lines) + "\n"


def _git(directory: Path, *args: str, message: str | None = None) -> None:
    subprocess.run(["git", "-C", str(directory), *args], input=message, text=True, check=True,
                   capture_output=True, env={**os.environ, **_IDENTITY})


def export_git(run: FinishedRun, candidate: Evaluated, destination: Path, hypotheses: Mapping[str, str]) -> int:
    """Write the candidate's edit path as a new git repository at destination; returns the number of commits.

    hypotheses maps mutator names to their hypothesis (a mutator no longer installed has none).
    """
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ExportError(f"{destination} exists and is not an empty directory; pass a new directory to --git")
    settings, seed = run.settings, run.seed
    eval_seed = settings.config.seed
    destination.mkdir(parents=True, exist_ok=True)
    script = destination / settings.seed_name
    _git(destination, "init", "-q")
    script.write_text(settings.seed_source)
    _git(destination, "add", settings.seed_name)
    _git(destination, "commit", "-q", "-F", "-",
         message=f"seed: {settings.seed_name} as written by hand\n\nMeasured: {_measured(seed, eval_seed)}.\n")
    previous = seed
    steps = edit_path(settings.seed_source, edits_from_json(candidate.candidate.genome), run.evaluated)
    for step in steps:
        script.write_text(step.code)
        _git(destination, "add", settings.seed_name)
        # An edit that rewrites what an earlier one wrote changes nothing here, but it is in the edit list: keep its commit.
        _git(destination, "commit", "-q", "--allow-empty", "-F", "-",
             message=step_message(step, previous, eval_seed, hypotheses.get(step.edit.mutator, "")))
        previous = step.measured or previous
    return 1 + len(steps)
