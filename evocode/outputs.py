"""The human side of a run directory, rewritten from the store as the run goes.

results.tsv puts autoresearch's columns first (commit, val_bpb, memory_gb,
status, description) so existing tooling reads it; best.py is the best
program so far, runs standalone and says in its header how to reproduce its
score; best.diff explains it against the seed;
candidates/ keeps each evaluated program with the tail of its log.
"""

from __future__ import annotations

import difflib
import os
import shlex
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from evocode.genome import edits_from_json
from evocode.search.fidelity import Spent, spent
from evocode.search.noise import FAILED, Fitness, beats, fitness, run_sigma
from evocode.search.selection import hall_of_fame
from evocode.spec import CORPUS_DIR_VAR, SEED_VAR, THREADS_VAR
from evocode.evaluation.runner import EvalResult
from evocode.store import Candidate, Evaluated, RungEvaluation

if TYPE_CHECKING:
    from evocode.settings import RunSettings

TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description", "generation", "parents", "seconds", "seeds", "sigma",
               "train_seconds", "params", "budget")


def seed_of(evaluated: list[Evaluated]) -> Evaluated | None:
    return next((e for e in evaluated if e.candidate.origin == "seed"), None)


def best_of(evaluated: list[Evaluated]) -> Evaluated | None:
    """The lowest mean val_bpb over the candidate's seeds; ties go to the earlier candidate."""
    ok = [e for e in evaluated if e.result.status == "ok"]
    return min(ok, key=lambda e: (fitness(e).mean, e.candidate.id)) if ok else None


def tsv_rows(evaluated: list[Evaluated]) -> list[tuple[str, ...]]:
    """One row per candidate in creation order, val_bpb its mean over its seeds.

    `keep` marks a candidate better than the last kept one by more than the
    run's measured noise (evocode.search.noise.beats), `discard` the other successes.
    """
    rows, kept, sigma = [], FAILED, run_sigma(evaluated)
    for e in evaluated:
        r, f = e.result, fitness(e)
        if r.status == "ok":
            status = "keep" if beats(f, kept, sigma) else "discard"
            kept = f if status == "keep" else kept
        else:
            status = r.status
        rows.append((
            e.candidate.id,
            "" if r.status != "ok" else f"{f.mean:.6f}",
            f"{r.peak_memory_mb / 1024:.2f}",
            status,
            e.candidate.description + (f" [{r.reason}]" if r.reason else ""),
            str(e.candidate.generation),
            ",".join(e.candidate.parents),
            f"{r.wall_seconds:.1f}",
            str(f.n),
            "" if f.sigma is None else f"{f.sigma:.6f}",
            f"{r.train_seconds:.1f}",
            str(r.num_params) if r.num_params else "",
            str(r.budget),
        ))
    return rows


def screened_rows(screened: list[Evaluated]) -> list[tuple[str, ...]]:
    """One row per child that stopped below the full budget (evocode.search.fidelity): `screened` with its score at
    the budget it reached, or how it failed there; never kept, its score is not comparable with full-budget ones."""
    return [(
        e.candidate.id,
        "" if e.result.status != "ok" else f"{e.result.val_bpb:.6f}",
        f"{e.result.peak_memory_mb / 1024:.2f}",
        "screened" if e.result.status == "ok" else e.result.status,
        e.candidate.description + (f" [{e.result.reason}]" if e.result.reason else ""),
        str(e.candidate.generation),
        ",".join(e.candidate.parents),
        f"{e.result.wall_seconds:.1f}",
        "1" if e.result.status == "ok" else "0",
        "",
        f"{e.result.train_seconds:.1f}",
        str(e.result.num_params) if e.result.num_params else "",
        str(e.result.budget),
    ) for e in screened]


def seed_diff(seed_source: str, code: str, seed_name: str, name: str) -> str:
    return "".join(difflib.unified_diff(
        seed_source.splitlines(keepends=True), code.splitlines(keepends=True), f"a/{seed_name}", f"b/{name}"
    ))


def explain(candidate: Candidate, result: EvalResult | None, seed: Evaluated | None, score: Fitness | None = None) -> str:
    """What best.py, best.diff, `best` and `show` print above a program: its score (over its seeds), its origin and its edits."""
    if result is None:
        lines = [f"# {candidate.id}: not evaluated yet"]
    elif result.status != "ok":
        lines = [f"# {candidate.id}: {result.status}" + (f" ({result.reason})" if result.reason else "")]
    else:
        mine = score or Fitness(result.val_bpb, 1, None)
        lines = [f"# {candidate.id}: val_bpb {mine.describe()}"]
        if seed is not None and result.budget < seed.result.budget:
            # Screened out below the full budget (--rungs): its score is not comparable with the seed's.
            lines[0] += f" on {result.budget} training tokens (screened out below the full budget of {seed.result.budget})"
        elif seed is not None and seed.result.status == "ok" and seed.candidate.id != candidate.id:
            base = fitness(seed)
            gain = base.mean - mine.mean
            lines[0] += f" (seed {base.describe()}, gain {gain:.6f} = {100 * gain / base.mean:.2f}%)"
    if candidate.parents:
        lines.append(f"# {candidate.origin} of {', '.join(candidate.parents)}, generation {candidate.generation}")
    edits = edits_from_json(candidate.genome)
    lines += [f"# edit {i}: {edit.description}  [{edit.mutator} at {edit.site}]" for i, edit in enumerate(edits, 1)]
    return "\n".join(lines) + "\n"


def write_candidate(run_dir: Path, e: Evaluated) -> None:
    folder = run_dir / "candidates"
    folder.mkdir(exist_ok=True)
    _write(folder / f"{e.candidate.id}.py", e.candidate.code)
    header = f"status: {e.result.status}\nval_bpb: {e.result.val_bpb}\nbudget: {e.result.budget}\nreason: {e.result.reason}\n---\n"
    _write(folder / f"{e.candidate.id}.log", header + e.result.log_tail)


def eval_command(settings: RunSettings, script: str) -> str:
    """The `eval` command that trains and scores a script exactly as the run trained and scored its candidates."""
    spec = settings.spec
    words = [
        "python -m evocode eval", shlex.quote(script), f"--budget {spec.budget}", f"--seed {settings.config.seed}",
        f"--context {spec.context_length}", f"--eval-tokens {spec.eval_tokens}", f"--device {spec.device}",
        f"--threads {settings.limits.threads}",
    ]
    if settings.data is not None:
        words.append(f"--data {shlex.quote(settings.data)}")
    return " ".join(words)


def reproduction(settings: RunSettings) -> str:
    """Comment lines saying how to retrain best.py as the run did: with `eval`, or by hand through the harness's variables."""
    env = {**settings.spec.to_env(), SEED_VAR: str(settings.config.seed), THREADS_VAR: str(settings.limits.threads)}
    if settings.data is None:
        env.pop(CORPUS_DIR_VAR, None)  # the default corpus is found without it, and the cache path is this machine's
    by_hand = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (f"# reproduce (in the run directory): {eval_command(settings, 'best.py')}\n# or by hand: {by_hand} python best.py\n"
            f"# (either gives its score on the run's evaluation seed {settings.config.seed}; a mean above also counts its re-evaluations)\n")


def best_report(settings: RunSettings, evaluated: list[Evaluated]) -> str | None:
    """best.diff's text: the best program's score and edits, how to reproduce it, then its diff against the seed."""
    best = best_of(evaluated)
    if best is None:
        return None
    return explain(best.candidate, best.result, seed_of(evaluated), fitness(best)) + reproduction(settings) + seed_diff(
        settings.seed_source, best.candidate.code, settings.seed_name, "best.py")


def write_summary(run_dir: Path, settings: RunSettings, evaluated: list[Evaluated], screened: list[Evaluated] = ()) -> None:
    """screened: children that stopped below the full budget, listed among the others in creation (id) order."""
    rows = [TSV_COLUMNS] + sorted(tsv_rows(evaluated) + screened_rows(list(screened)), key=lambda row: row[0])
    _write(run_dir / "results.tsv", "".join("\t".join(cell.replace("\t", " ") for cell in row) + "\n" for row in rows))
    best = best_of(evaluated)
    if best is not None:
        _write(run_dir / "best.py", explain(best.candidate, best.result, seed_of(evaluated), fitness(best)) + reproduction(settings) + best.candidate.code)
        _write(run_dir / "best.diff", best_report(settings, evaluated))


def _compute(used: Spent, evaluations: int, reevaluations: int) -> str:
    """Training tokens and seconds spent in all (what the evaluations, the re-evaluations and any screening below the
    full budget trained on), and how they split."""
    parts = f"{evaluations} evaluations, {reevaluations} re-evaluations"
    if used.screenings:
        parts += (f", {used.screenings} screenings below the full budget on {used.screening_tokens:,} tokens, "
                  f"where {used.screened_out} children stopped")
    return f"{used.tokens:,} training tokens, {used.seconds:.0f} s of training ({parts})"


def _write(path: Path, text: str) -> None:
    """Readers (a user's `cat`, a crash mid-write) never see half a file."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


def summary(evaluated: list[Evaluated], rungs: Sequence[RungEvaluation] = ()) -> dict:
    """What `status` prints and the progress bar shows; rungs: the run's evaluations below the full budget, whose
    compute counts too."""
    seed = seed_of(evaluated)
    best = best_of(evaluated)
    statuses: dict[str, int] = {}
    for e in evaluated:
        statuses[e.result.status] = statuses.get(e.result.status, 0) + 1
    seed_bpb = fitness(seed).mean if seed and seed.result.status == "ok" else None
    return {
        "evaluations": len(evaluated),
        "generation": max((e.candidate.generation for e in evaluated), default=0),
        "statuses": statuses,
        "seed_val_bpb": seed_bpb,
        "best": best,
        "gain": None if best is None or seed_bpb is None else seed_bpb - fitness(best).mean,
        "median_seconds": statistics.median(e.result.wall_seconds for e in evaluated) if evaluated else None,
        "reevaluations": sum(len(e.reevaluations) for e in evaluated),
        "spent": spent(evaluated, rungs),
    }


def format_status(
    run_dir: Path, evaluated: list[Evaluated], mutator_failures: dict[str, int], fame: int = 5,
    state: str | None = None, planned: int | None = None, rungs: Sequence[RungEvaluation] = (),
) -> str:
    """What `status` and the end of `evolve` print; state and planned come from the caller, which knows the driver."""
    s = summary(evaluated, rungs)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items())) or "none yet"
    lines = [f"run:              {run_dir}"] + ([f"state:            {state}"] if state else []) + [
        f"generation:       {s['generation']}",
        f"evaluations:      {s['evaluations']}{'' if planned is None else f' of {planned} planned'} ({statuses})",
        f"seed val_bpb:     {'-' if s['seed_val_bpb'] is None else format(s['seed_val_bpb'], '.6f')}",
    ]
    lines.append(f"compute:          {_compute(s['spent'], s['evaluations'], s['reevaluations'])}")
    if s["best"] is not None:
        lines.append(f"best val_bpb:     {fitness(s['best']).describe()} over its evaluation seeds "
                     f"({s['best'].candidate.id}, {s['best'].result.num_params:,} parameters, "
                     f"{s['best'].result.train_seconds:.1f} s of training; see best.py and best.diff)")
    if s["gain"] is not None:
        lines.append(f"gain over seed:   {s['gain']:.6f} bits/byte ({100 * s['gain'] / s['seed_val_bpb']:.2f}%)")
    if s["median_seconds"] is not None:
        lines.append(f"time per eval:    {s['median_seconds']:.1f} s (median)")
    if mutator_failures:
        lines.append("mutators skipped: " + ", ".join(f"{name} {count}x" for name, count in mutator_failures.items()))
    best = hall_of_fame(evaluated, fame)
    if best:
        lines.append("hall of fame:")
        lines += [f"  {fitness(e).describe()}  {e.candidate.id}  {e.candidate.description}" for e in best]
    return "\n".join(lines)
