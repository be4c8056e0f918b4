"""The one live line `evolve` shows: generation, evaluations done, best score, gain, failures."""

from __future__ import annotations

from tqdm import tqdm

from evocode.evaluation.runner import EvalResult
from evocode.outputs import summary
from evocode.search.noise import fitness
from evocode.store import Candidate, Evaluated


class Progress:
    def __init__(self, total: int, evaluated: list[Evaluated]) -> None:
        self.bar = tqdm(total=total, initial=len(evaluated), unit="eval", dynamic_ncols=True)
        self.show(evaluated)

    def __call__(self, candidate: Candidate, result: EvalResult, evaluated: list[Evaluated]) -> None:
        self.bar.update(1)
        self.show(evaluated)

    def show(self, evaluated: list[Evaluated]) -> None:
        s = summary(evaluated)
        fields = {"gen": s["generation"]}
        if s["best"] is not None:
            fields["best"] = f"{fitness(s['best']).mean:.4f}"
        if s["gain"] is not None:
            fields["gain"] = f"{s['gain']:+.4f}"
        failures = {k: v for k, v in sorted(s["statuses"].items()) if k != "ok"}
        if failures:
            fields["failed"] = " ".join(f"{k}:{v}" for k, v in failures.items())
        self.bar.set_postfix(fields, refresh=True)

    def close(self) -> None:
        self.bar.close()
