"""Which search finds a better script per unit of compute: evocode, random edit lists, or Optuna TPE?

All three start from the seed script, train every candidate on the same
token budget with the same per-candidate time limit and select on the same
evaluation seed (the search seed), and all three get equal training tokens:
random search and TPE get as many full-budget evaluations as evocode's
evaluations were allotted tokens for, its re-evaluations and (with
`--rungs`) its screening at lower budgets included, each counted by its budget.

- evocode: `evolve` with the given population and generations (credit and
  noise-aware fitness as configured, `--rungs`/`--eta` for successive halving;
  `--ablations` adds a run with each of credit, re-evaluation, adaptive
  steps, stacking, model proposals and the next generation's early children
  (`--lag`) off, and one with rungs on (off when `--rungs` turned them on),
  reported in its own section).
- random: independent random edit lists from the same mutators, their
  lengths drawn from the lengths of evocode's own candidates.
- TPE: Optuna's TPE over the seed's module-level numeric constants
  (benchmarks/tpe.py: powers of two stay powers of two, log scales, fractions
  stay in (0, 1)), starting from the seed's own values.

Gains on the selection seed are optimistic (the winner's curse), so every
winner and the seed are retrained on fresh evaluation seeds that no search
saw; the rechecked gain is the honest number. Wall time is reported beside
tokens.

    python benchmarks/search.py [--budget 100000] [--population 6] [--generations 3] [--search-seeds 5]
        [--recheck-seeds 4] [--timeout 60] [--workers CORES] [--rungs 1] [--eta 3] [--ablations]
        [--set FIELD=VALUE ...] [--evocode-only]

Needs Optuna: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from results import machine, table, write_section
from tpe import tpe_search

from evocode.data import prepare_corpus
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import evolve
from evocode.executors.local import Job, Slots, evaluate_many
from evocode.genome import Genome, edits_from_json
from evocode.mutation import load_mutators, mutate
from evocode.outputs import best_of
from evocode.search.fidelity import DEFAULT_ETA
from evocode.search.noise import fitness
from evocode.settings import EvolveConfig, RunSettings
from evocode.spec import EvalSpec
from evocode.store import RunStore

SEED_SCRIPT = Path(__file__).resolve().parent.parent / "seeds" / "train.py"
# Fresh evaluation seeds for rechecking winners: far from every search seed and from evocode's derived seeds' stream.
RECHECK_SEED_BASE = 10_000
# The ablation's rungs: two, so each child gets at least budget / eta tokens (three would screen on budget / 9).
ABLATION_RUNGS = 2


@dataclass(frozen=True)
class Outcome:
    """What one search found and what it cost; trace: (training tokens, val_bpb or None) per evaluation, in order.

    allotted: the training tokens its evaluations were given (each its budget), what the others are matched on."""

    method: str
    best_code: str
    best_description: str
    best_bpb: float
    evaluations: int
    tokens: int
    wall_seconds: float
    trace: tuple[tuple[int, float | None], ...]
    allotted: int
    edit_counts: tuple[int, ...] = ()  # how many edits each candidate had (evocode's; random search copies them)
    seed_bpb: float | None = None  # the seed script's score on the selection seed (evocode's run has it)


def _score(result: EvalResult) -> float | None:
    return result.val_bpb if result.status == "ok" else None


def evocode_search(method: str, seed_source: str, config: EvolveConfig, spec: EvalSpec, limits: Limits) -> Outcome:
    """One evolve run; its best is the lowest mean over the seeds it has, its trace in the order evaluations finished."""
    start = time.time()
    with tempfile.TemporaryDirectory() as run_dir:
        settings = RunSettings(seed_source, "train.py", config, spec, limits, auto_timeout=False)
        evaluated = evolve(settings, Path(run_dir), load_mutators())
        with RunStore.reader(Path(run_dir)) as store:
            finished = store.finish_times()
            rungs = store.rungs()
    by_key = {e.candidate.id: e.result for e in evaluated}
    by_key |= {f"{e.candidate.id} seed {r.seed} budget {spec.budget}": r for e in evaluated for r in e.reevaluations}
    by_key |= {f"{r.candidate_id} rung {r.rung} budget {r.budget}": r.result for r in rungs if r.result is not None}
    order = sorted(finished, key=finished.get)
    # Only first evaluations are candidates found; re-evaluations are compute spent on certainty, and a score below
    # the full budget is a screening, not a find.
    trace = tuple((by_key[k].tokens, None if " seed " in k or " rung " in k else _score(by_key[k])) for k in order)
    allotted = sum(int(k.rsplit(" budget ", 1)[1]) if " budget " in k else spec.budget for k in order)
    best = best_of(evaluated)
    counts = tuple(len(edits_from_json(e.candidate.genome)) for e in evaluated[1:])
    return Outcome(method, best.candidate.code, best.candidate.description, fitness(best).mean, len(trace),
                   sum(t for t, _ in trace), time.time() - start, trace, allotted, counts, evaluated[0].result.val_bpb)


def random_search(seed_source: str, evaluations: int, lengths: list[int], spec: EvalSpec, limits: Limits, workers: int,
                  seed: int) -> Outcome:
    """The seed and evaluations − 1 independent random edit lists, their lengths drawn from `lengths`."""
    start = time.time()
    rng = np.random.default_rng([seed, 0x5EA4C8])
    mutators = load_mutators()
    seed_genome = Genome(seed_source)
    programs = {seed_genome.code: "seed"}
    for length in rng.choice(lengths, size=evaluations - 1):
        for _ in range(10):  # redraw duplicates, as evocode does
            child = mutate(seed_genome, mutators, rng, n_edits=int(length)).genome
            if child.code not in programs:
                programs[child.code] = "; ".join(e.description for e in child.edits)
                break
    codes = list(programs)
    done = list(evaluate_many([Job(str(i), c, seed, spec) for i, c in enumerate(codes)], limits, Slots(workers)))
    found = [(codes[int(i)], r) for i, r in done]
    return _outcome("random", found, {c: programs[c] for c in codes}, start)


def tpe(seed_source: str, evaluations: int, spec: EvalSpec, limits: Limits, workers: int, seed: int) -> Outcome:
    start = time.time()
    found = tpe_search(seed_source, evaluations, spec, limits, workers, seed)
    return _outcome("TPE", found, {code: _constants_changed(seed_source, code) for code, _ in found}, start)


def _constants_changed(seed_source: str, code: str) -> str:
    before, after = seed_source.splitlines(), code.splitlines()
    return "; ".join(f"{a.strip()} (was {b.split('=')[1].strip()})" for b, a in zip(before, after) if a != b)


def _outcome(method: str, found: list[tuple[str, EvalResult]], descriptions: dict[str, str], start: float) -> Outcome:
    code, result = min(((c, r) for c, r in found if r.status == "ok"), key=lambda cr: cr[1].val_bpb)
    trace = tuple((r.tokens, _score(r)) for _, r in found)
    return Outcome(method, code, descriptions[code], result.val_bpb, len(found), sum(t for t, _ in trace), time.time() - start, trace,
                   sum(r.budget for _, r in found))


def recheck(codes: list[str], spec: EvalSpec, limits: Limits, workers: int, seeds: list[int]) -> list[float]:
    """Each program's mean val_bpb over the fresh evaluation seeds (failures left out; inf if all failed)."""
    jobs = [Job(f"{i} {s}", c, s, spec) for i, c in enumerate(codes) for s in seeds]
    scores: list[list[float]] = [[] for _ in codes]
    for key, r in evaluate_many(jobs, limits, Slots(workers)):
        if r.status == "ok":
            scores[int(key.split()[0])].append(r.val_bpb)
    return [statistics.mean(s) if s else float("inf") for s in scores]


def tokens_to_reach(trace: tuple[tuple[int, float | None], ...], seed_bpb: float, gain: float) -> int | None:
    """Training tokens spent until an evaluation first scored a gain of at least `gain` over the seed (None: never)."""
    spent = 0
    for tokens, bpb in trace:
        spent += tokens
        if bpb is not None and seed_bpb - bpb >= gain:
            return spent
    return None


def config_change(text: str) -> tuple[str, object]:
    """FIELD=VALUE for EvolveConfig, the value read as the field's default is typed."""
    name, _, raw = text.partition("=")
    defaults = EvolveConfig(workers=1)
    if not hasattr(defaults, name) or name in ("seed", "workers", "population", "generations", "rungs", "eta"):
        raise argparse.ArgumentTypeError(f"{name!r} is not an EvolveConfig field this option sets (the others have flags)")
    kind = type(getattr(defaults, name))
    if kind not in (bool, int, float):
        raise argparse.ArgumentTypeError(f"{name} is not a number or a switch; set it in a script")
    if kind is bool:
        return name, raw.lower() in ("1", "true", "yes", "on")
    try:
        return name, kind(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__}, got {raw!r}") from None


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):+.4f} [{min(values):+.4f}, {max(values):+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=100_000, help="training tokens per evaluation (default %(default)s)")
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--search-seeds", type=int, default=5)
    parser.add_argument("--recheck-seeds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0, help="per-candidate limit in seconds, the same for every method")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rungs", type=int, default=1, help="evocode's --rungs (default %(default)s: every child gets the full budget)")
    parser.add_argument("--eta", type=int, default=DEFAULT_ETA, help="evocode's --eta (default %(default)s)")
    parser.add_argument("--ablations", action="store_true",
                        help="also run evocode without credit, without re-evaluation, with fixed steps, without stacking, without model "
                             "proposals, and with rungs on "
                             "(off when --rungs turned them on) (its own RESULTS section)")
    parser.add_argument("--set", action="append", default=[], type=config_change, metavar="FIELD=VALUE",
                        help="an EvolveConfig field for every evocode run, e.g. model=1.0 or seeds=2 (repeatable): "
                             "pilots of other settings are commands anyone can run")
    parser.add_argument("--evocode-only", action="store_true",
                        help="run and recheck evocode's variants only, not the baselines matched to them (a pilot: no "
                             "comparison, its own RESULTS section)")
    args = parser.parse_args()

    seed_source = SEED_SCRIPT.read_text()
    spec = EvalSpec(budget=args.budget, corpus_dir=str(prepare_corpus().directory))
    limits = Limits(threads=max(1, (os.cpu_count() or 1) // args.workers), timeout_s=args.timeout)
    fresh = [RECHECK_SEED_BASE + i for i in range(args.recheck_seeds)]
    (seed_re,) = recheck([seed_source], spec, limits, args.workers, fresh)
    variants = {"evocode": {}}
    if args.ablations:
        variants |= {"evocode, no credit": {"credit": False}, "evocode, one seed each": {"seeds": 1},
                     "evocode, fixed steps": {"adaptive_steps": False}, "evocode, no stacking": {"stack": 0.0},
                     "evocode, no model": {"model": 0.0}, "evocode, no lag": {"lag": 0}}
        # lag None: its default for the rungs (none with them, one fewer than the slots without).
        variants |= {"evocode, rungs on": {"rungs": ABLATION_RUNGS, "lag": None}} if args.rungs == 1 else \
            {"evocode, no rungs": {"rungs": 1, "lag": None}}
    rows, rechecked, reach = [], {}, {}
    for search_seed in range(args.search_seeds):
        base = replace(EvolveConfig(population=args.population, generations=args.generations, workers=args.workers,
                                    seed=search_seed, rungs=args.rungs, eta=args.eta), **dict(args.set))
        outcomes = [evocode_search(name, seed_source, replace(base, **change), spec, limits) for name, change in variants.items()]
        evo = outcomes[0]
        seed_bpb = evo.seed_bpb
        lengths = list(evo.edit_counts) or [1]
        matched = round(evo.allotted / args.budget)  # full-budget evaluations at evocode's training tokens
        if not args.evocode_only:
            outcomes += [random_search(seed_source, matched, lengths, spec, limits, args.workers, search_seed),
                         tpe(seed_source, matched, spec, limits, args.workers, search_seed)]
        scores = recheck([o.best_code for o in outcomes], spec, limits, args.workers, fresh)
        tpe_gain = None if args.evocode_only else seed_bpb - outcomes[-1].best_bpb
        for o, score in zip(outcomes, scores):
            rechecked.setdefault(o.method, []).append(seed_re - score)
            if tpe_gain is not None:
                reach.setdefault(o.method, []).append(tokens_to_reach(o.trace, seed_bpb, tpe_gain))
            rows.append([str(search_seed), o.method, str(o.evaluations), f"{o.tokens:,}", f"{o.wall_seconds:.0f}",
                         f"{seed_bpb - o.best_bpb:+.4f}", f"{seed_re - score:+.4f}", o.best_description[:100]])
            print(" | ".join(rows[-1]), flush=True)
    # An ablation run or a pilot is its own section, so it never replaces the comparison run's table.
    name = "search-pilot" if args.evocode_only else "search-ablations" if args.ablations else "search"
    write_section(name, report(args, rows, rechecked, reach, fresh, seed_re))


def _median_tokens(reached: list[int | None]) -> str:
    """The median over the search seeds where the gain was reached at all."""
    tokens = [r for r in reached if r is not None]
    return f"{int(statistics.median(tokens)):,}" if tokens else "never"


def _command(args) -> str:
    return (f"`python benchmarks/search.py --budget {args.budget} --population {args.population} --generations "
            f"{args.generations} --search-seeds {args.search_seeds} --recheck-seeds {args.recheck_seeds} --timeout {args.timeout:g} "
            f"--workers {args.workers} --rungs {args.rungs} --eta {args.eta}{' --ablations' if args.ablations else ''}"
            f"{''.join(f' --set {k}={v}' for k, v in args.set)}{' --evocode-only' if args.evocode_only else ''}`")


def pilot_report(args, rows, rechecked, fresh, seed_re) -> str:
    """evocode's variants alone: what changed in evocode, before a comparison is worth its time."""
    summary = [[m, _spread(g)] for m, g in rechecked.items()]
    return "\n\n".join([
        "## Search pilot: evocode's variants alone (`benchmarks/search.py --evocode-only`)",
        f"Command: {_command(args)}. Machine: {machine()}; {args.workers} workers.",
        "No baseline ran: this measures evocode's variants on the same budget, time limit, search seeds and fresh "
        f"recheck seeds {fresh} as the comparison, so its rows can be read beside that table's evocode rows.",
        table(["search seed", "method", "evals", "training tokens", "wall s", "selection gain", "rechecked gain", "best edits"], rows),
        table(["method", "rechecked gain: median [min, max]"], summary),
        f"The seed's mean over the fresh seeds: {seed_re:.4f}.",
    ])


def report(args, rows, rechecked, reach, fresh, seed_re) -> str:
    if args.evocode_only:
        return pilot_report(args, rows, rechecked, fresh, seed_re)
    n = len(rechecked["evocode"])
    wins = {m: sum(a > b for a, b in zip(rechecked["evocode"], rechecked[m])) for m in ("random", "TPE")}
    summary = [[m, _spread(g), _median_tokens(reach[m]), f"{sum(r is not None for r in reach[m])}/{n}"]
               for m, g in rechecked.items()]
    return "\n\n".join([
        "## Search: evocode against random edit lists and Optuna TPE at equal training tokens (`benchmarks/search.py`)",
        f"Command: {_command(args)}. Machine: {machine()}; {args.workers} workers.",
        "Random search and TPE get as many full-budget evaluations as evocode's training tokens buy (its re-evaluations and "
        "its screening at lower budgets included, each counted by its budget), each on the same budget and "
        f"time limit ({args.timeout:g} s), selecting on evaluation seed = search seed. Selection gain = seed − best on that "
        f"seed; rechecked gain = the seed's mean − the winner's mean, both retrained on fresh evaluation seeds {fresh} "
        "(bits per byte, positive is better).",
        table(["search seed", "method", "evals", "training tokens", "wall s", "selection gain", "rechecked gain", "best edits"], rows),
        table(["method", "rechecked gain: median [min, max]", "tokens to reach TPE's selection gain (median)", "reached"], summary),
        f"evocode's rechecked gain beats random search's in {wins['random']} of {n} search seeds and TPE's in {wins['TPE']} of {n}. "
        f"The seed's mean over the fresh seeds: {seed_re:.4f}.",
    ])


if __name__ == "__main__":
    main()
