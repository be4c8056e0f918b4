"""The hidden test: the run's final best and the seed, scored once on text selection never saw.

Selection picks the candidate that scored best on the validation split, so
its validation gain is optimistic (the winner's curse). The default corpus
keeps a third split that no candidate of the search is scored on; at the end
of a run the best and the seed are trained again with the run's evaluation
seed and scored on it, once, and the pair is kept in the run store. The gap
between the validation gain and the hidden gain is selection's optimism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from evocode.data import corpus_of
from evocode.executors import open_executor
from evocode.executors.local import Job
from evocode.outputs import best_of, seed_of
from evocode.search.noise import fitness
from evocode.settings import RunSettings
from evocode.store import RunStore

_KEY = "hidden_test"


@dataclass(frozen=True)
class HiddenTest:
    candidate: str
    best_val_bpb: float | None
    seed_val_bpb: float | None
    validation_gain: float

    @property
    def gain(self) -> float | None:
        if self.best_val_bpb is None or self.seed_val_bpb is None:
            return None
        return self.seed_val_bpb - self.best_val_bpb

    def line(self) -> str:
        if self.gain is None:
            return f"hidden test:      {self.candidate} or the seed failed on the hidden split"
        return (f"hidden test:      gain {self.gain:+.6f} bits/byte ({self.candidate} {self.best_val_bpb:.6f} vs seed "
                f"{self.seed_val_bpb:.6f}; validation gain {self.validation_gain:+.6f})")


def hidden_test(run_dir: Path, settings: RunSettings) -> HiddenTest | None:
    """Score the run's best and its seed on the hidden split, once; None when the corpus has no hidden split."""
    if corpus_of(settings.spec.corpus_dir).hidden_path is None:
        return None
    with RunStore(run_dir) as store:
        evaluated = store.evaluated()
        best, seed = best_of(evaluated), seed_of(evaluated)
        if best is None or seed is None:
            return None
        stored = store.get(_KEY)
        if stored is not None and stored["candidate"] == best.candidate.id:
            return HiddenTest(**stored)
        spec = replace(settings.spec, split="hidden")
        jobs = [Job(e.candidate.id, e.candidate.code, settings.config.seed, spec) for e in {best.candidate.id: best, seed.candidate.id: seed}.values()]
        with open_executor(settings.config) as evaluate_many:
            scores = {key: r.val_bpb for key, r in evaluate_many(jobs, settings.limits)}
        result = HiddenTest(best.candidate.id, scores[best.candidate.id], scores[seed.candidate.id],
                            fitness(seed).mean - fitness(best).mean)
        store.put(_KEY, asdict(result))
        return result


def stored_hidden_test(store: RunStore) -> HiddenTest | None:
    stored = store.get(_KEY)
    return None if stored is None else HiddenTest(**stored)
