"""A run that the insight commands may read: it exists and its last generation is complete.

Report, export and distill explain a run's outcome, so they refuse a directory
that holds no run, and a run that stopped before its last generation (whose
best may still change), with one line that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evocode.outputs import best_of, seed_of
from evocode.settings import RunSettings, stored_settings
from evocode.store import Evaluated, RunStore, RungEvaluation


class RunNotReady(ValueError):
    """The directory holds no run, or one that has not finished."""


@dataclass(frozen=True)
class FinishedRun:
    directory: Path
    settings: RunSettings
    evaluated: tuple[Evaluated, ...]
    rungs: tuple[RungEvaluation, ...] = ()  # evaluations below the full budget (--rungs)

    @property
    def seed(self) -> Evaluated:
        return seed_of(list(self.evaluated))

    @property
    def best(self) -> Evaluated:
        return best_of(list(self.evaluated))

    def candidate(self, candidate_id: str | None) -> Evaluated:
        """The named evaluated candidate, or the best when None; RunNotReady when there is no such candidate."""
        if candidate_id is None:
            return self.best
        found = next((e for e in self.evaluated if e.candidate.id == candidate_id), None)
        if found is None:
            raise RunNotReady(f"{self.directory} has no evaluated candidate {candidate_id}; `python -m evocode status {self.directory}` lists the best ones")
        return found


def load_finished_run(run_dir: Path) -> FinishedRun:
    """The run stored in run_dir, or RunNotReady with a one-line reason and what to do."""
    settings = stored_settings(run_dir)
    if settings is None:
        raise RunNotReady(f"{run_dir} holds no evocode run; start one with `python -m evocode evolve SCRIPT`")
    with RunStore.reader(run_dir) as store:
        generations = len(store.populations())
        evaluated = tuple(store.evaluated())
        rungs = tuple(store.rungs())
    wanted = settings.config.generations + 1
    if generations < wanted:
        raise RunNotReady(
            f"{run_dir} has finished {generations} of its {wanted} generations; "
            f"finish it with `python -m evocode resume {run_dir}` first"
        )
    if best_of(list(evaluated)) is None:
        raise RunNotReady(f"{run_dir} has no successful evaluation; there is nothing to explain")
    return FinishedRun(run_dir, settings, evaluated, rungs)
