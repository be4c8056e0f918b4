"""`distill RUNDIR`: distill a finished run's best (or any candidate) and write what it found into the run directory.

Fresh evaluation seeds are the run's seed + 1, + 2, ...: never the one the
run selected on, so the winner's luck on that seed does not count. The
measurement is the run's own (budget, corpus, limits and timeout); a
transfer budget scales the timeout with it. Distill holds the run's lock,
so it never runs beside a driver of the same run; its results, table
included, go into the run store, where `report` finds them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from evocode.data import prepare_corpus
from evocode.executors.local import Slots
from evocode.genome import edits_from_json
from evocode.insight.distill import HEADER, Distillation, Transfer, distill, distill_markdown, summary, table_rows
from evocode.insight.finished_run import load_finished_run
from evocode.insight.measurements import Condition, Measurements
from evocode.insight.report import DISTILL_KEY
from evocode.outputs import seed_diff
from evocode.settings import with_timeout
from evocode.store import RunStore

MIN_SEEDS = 3


@dataclass(frozen=True)
class DistillOptions:
    candidate: str | None = None  # None: the best
    seeds: int = MIN_SEEDS
    transfer_budget: int | None = None  # None: TRANSFER_FACTOR × the run's budget
    transfer_data: Path | None = None
    workers: int | None = None  # None: the run's

    def __post_init__(self) -> None:
        if self.seeds < MIN_SEEDS:
            raise ValueError(f"--seeds must be at least {MIN_SEEDS}: a σ over fewer seeds says little, got {self.seeds}")
        if self.transfer_budget is not None and self.transfer_budget < 1:
            raise ValueError(f"--transfer-budget must be a positive number of tokens, got {self.transfer_budget}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")


TRANSFER_FACTOR = 4


def _scaled(condition: Condition, budget: int) -> Condition:
    """The condition at another budget, its timeout scaled with it (training time grows with tokens)."""
    factor = max(1.0, budget / condition.spec.budget)
    return Condition(replace(condition.spec, budget=budget),
                     replace(condition.limits, timeout_s=condition.limits.timeout_s * factor))


def transfers(base: Condition, options: DistillOptions) -> tuple[Transfer, ...]:
    budget = options.transfer_budget or TRANSFER_FACTOR * base.spec.budget
    found = [Transfer(f"{budget} tokens", _scaled(base, budget))]
    if options.transfer_data is not None:
        corpus = prepare_corpus(options.transfer_data)
        found.append(Transfer(f"{options.transfer_data.name} ({base.spec.budget} tokens)",
                              Condition(replace(base.spec, corpus_dir=str(corpus.directory)), base.limits)))
    return tuple(found)


def _log(line: str) -> None:
    print(f"evocode: distill: {line}", file=sys.stderr)


def distill_run(run_dir: Path, options: DistillOptions) -> tuple[Distillation, Measurements]:
    """Distill the candidate and write distill.md, minimal.py and minimal.diff; returns the findings and the measurements."""
    run = load_finished_run(run_dir)
    candidate = run.candidate(options.candidate)
    settings = run.settings
    workers = options.workers or settings.config.workers
    with RunStore(run_dir) as store:
        settings = with_timeout(settings, store.get("timeout_s"))
        limits = replace(settings.limits, threads=max(1, settings.limits.threads * settings.config.workers // workers))
        base = Condition(settings.spec, limits)
        measurements = Measurements(store, Slots(workers, settings.config.gpus, settings.config.per_gpu))
        stored = measurements.count()
        seeds = tuple(settings.config.seed + k for k in range(1, options.seeds + 1))
        found = distill(settings.seed_source, edits_from_json(candidate.candidate.genome), measurements, seeds, base,
                        transfers(base, options), _log)
        _log(f"trained {measurements.trained} programs now; {stored} measurements were in the store already")
        title = f"Distilled edits of {candidate.candidate.id}"
        text = summary(found, settings.spec.budget, settings.config.seed)
        store.put(DISTILL_KEY, {"candidate": candidate.candidate.id, "summary": text, "header": HEADER, "rows": table_rows(found)})
    command = f"python -m evocode distill {run_dir}" + (f" --candidate {options.candidate}" if options.candidate else "")
    (run_dir / "distill.md").write_text(distill_markdown(found, title, text, command))
    (run_dir / "minimal.py").write_text(found.minimal_code)
    header = "".join(f"# edit {k}: {found.edits[i].description}\n" for k, i in enumerate(found.minimal, 1))
    (run_dir / "minimal.diff").write_text(
        f"# minimal set of {candidate.candidate.id}: gain {found.minimal_gain} over the seed on seeds {seeds}\n"
        + header + seed_diff(settings.seed_source, found.minimal_code, settings.seed_name, "minimal.py"))
    return found, measurements
