"""`python -m evocode ...`: each command parses its options and calls one function."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from evocode.data import CorpusError, data_source, prepare_corpus
from evocode.evaluation.runner import Limits, evaluate, format_result
from evocode.evaluation.workers import detect_gpus
from evocode.executors import EXECUTORS, ClusterError
from evocode.executors.local import DEFAULT_PER_GPU, Slots
from evocode.evolve import SeedFailed, evolve
from evocode.genome import Genome
from evocode.insight.distill_run import MIN_SEEDS, TRANSFER_FACTOR, DistillOptions, distill_run
from evocode.insight.export import export_git
from evocode.insight.finished_run import load_finished_run
from evocode.insight.holdout import hidden_test, stored_hidden_test
from evocode.insight.human import queue_variant
from evocode.insight.report import write_report
from evocode.mutation import describe_mutators, describe_variant, load_mutators, sample_variants, select_mutators
from evocode.options import (
    RUNS_ROOT, OptionError, bits_per_byte, check_population, check_spec, context_int, data_file, default_run_dir, device, existing_dir,
    existing_run, holds_run, memory_mb, mutator_item, new_or_existing_run_dir, non_negative_int, population_int,
    positive_int, positive_seconds, probability, run_name, scheduler_file, script_file, seed_int, share, time_factor, eta_int,
)
from evocode.outputs import best_report, explain, format_status, seed_diff, seed_of
from evocode.progress import Progress
from evocode.runstate import describe_runs, record_end, record_start, run_state, status_record
from evocode.search.credit import format_what_helped, what_helped_rows
from evocode.search.fidelity import screened_out
from evocode.search.noise import fitness
from evocode.settings import MIN_TIMEOUT_S, TIMEOUT_FACTOR, EvolveConfig, RunSettings, pin, stored_settings
from evocode.spec import DEFAULT_BUDGET, DEFAULT_CONTEXT_LENGTH, DEFAULT_EVAL_TOKENS, EvalSpec
from evocode.store import RunLocked, RunStore


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=positive_int, default=DEFAULT_BUDGET, help="training tokens per candidate (default %(default)s)")
    parser.add_argument("--data", type=data_file, default=None, help="a text file to train and validate on, or stdlib for the Python standard library's sources "
                             "(default: evocode's corpus, public-domain Bible translations)")
    parser.add_argument("--context", type=context_int, default=DEFAULT_CONTEXT_LENGTH, help="context length of training and validation windows (default %(default)s)")
    parser.add_argument("--eval-tokens", type=positive_int, default=DEFAULT_EVAL_TOKENS, help="held-out tokens the score averages over (default %(default)s)")
    parser.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--timeout", type=positive_seconds, default=None,
                        help=f"seconds before a candidate is killed (eval: {Limits.timeout_s:g}; evolve: "
                             f"{TIMEOUT_FACTOR:g} × the seed's time, at least {MIN_TIMEOUT_S:g})")
    parser.add_argument("--memory", type=memory_mb, default=Limits.memory_mb, help="memory limit of a candidate in MiB (default %(default)s)")
    parser.add_argument("--cold", action="store_true",
                        help="start each candidate as a new Python process instead of forking it from a warm worker (same scores, slower)")
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                        help="do not confine candidates with Landlock (by default a candidate reads only what imports need, "
                             "writes only its own directory, opens no TCP connection and signals nothing outside itself)")


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    try:
        corpus = prepare_corpus(args.data)
    except CorpusError as e:
        raise OptionError(f"--data {args.data}: {e}") from None
    defaults = {"budget": DEFAULT_BUDGET, "context": DEFAULT_CONTEXT_LENGTH, "eval-tokens": DEFAULT_EVAL_TOKENS}
    check_spec(args.budget, args.context, args.eval_tokens, corpus, defaults)
    return EvalSpec(
        budget=args.budget, context_length=args.context, eval_tokens=args.eval_tokens,
        corpus_dir=str(corpus.directory), device=args.device,
    )


def limits_from_args(args: argparse.Namespace, threads: int) -> Limits:
    return Limits(timeout_s=Limits.timeout_s if args.timeout is None else args.timeout, memory_mb=args.memory, threads=threads,
                  sandbox=args.sandbox)


def gpus_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The GPUs a run spreads its slots over: none when the device is the CPU."""
    if args.gpus == "none" or args.device == "cpu":
        return ()
    gpus = detect_gpus() if args.gpus == "auto" else tuple(g.strip() for g in args.gpus.split(","))
    if not all(g.isdigit() for g in gpus):
        raise OptionError(f"--gpus takes GPU indices like 0,1, 'auto' or 'none', got {args.gpus!r}")
    if gpus and args.device not in ("auto", "cuda", "cuda:0"):
        raise OptionError(f"--device {args.device} conflicts with --gpus: each candidate sees only its own GPU, as cuda:0; "
                         "use --device cuda or leave it out")
    return gpus


def default_population(slots: Slots, elite: int) -> int:
    """The default population, grown so that each generation has a child for every slot (an elite too big stays an error)."""
    default = EvolveConfig.population
    return default if elite >= default else max(default, slots.count + elite)


def add_executor_options(parser: argparse.ArgumentParser, resuming: bool) -> None:
    run_s = "(default: the run's)" if resuming else "(default local)"
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help=f"where candidates are evaluated: this machine's workers, or a Dask cluster {run_s}")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT", help="the Dask scheduler's address (with --executor dask)")
    cluster.add_argument("--scheduler-file", type=scheduler_file, default=None, metavar="FILE",
                         help="the file `dask scheduler --scheduler-file FILE` writes (with --executor dask)")


def executor_from_args(args: argparse.Namespace, run: EvolveConfig | None = None) -> dict:
    """Where evaluations run: the options given (a scheduler alone means Dask), else the run's own, else locally."""
    scheduler_file = args.scheduler_file and str(args.scheduler_file)
    executor = args.executor or ("dask" if args.scheduler or scheduler_file else run.executor if run else "local")
    if executor == "local":
        if args.scheduler or scheduler_file:
            raise OptionError("--scheduler and --scheduler-file name a Dask cluster: pass them with --executor dask")
        return {"executor": "local", "scheduler": None, "scheduler_file": None}
    if args.scheduler or scheduler_file:
        return {"executor": "dask", "scheduler": args.scheduler, "scheduler_file": scheduler_file}
    if run and run.executor == "dask":
        return {"executor": "dask", "scheduler": run.scheduler, "scheduler_file": run.scheduler_file}
    raise OptionError("--executor dask needs the cluster: --scheduler tcp://HOST:PORT or --scheduler-file FILE")


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="train and score one script under the harness")
    p.add_argument("script", type=script_file)
    p.add_argument("--seed", type=seed_int, default=0, help="evaluation seed: initialization and batch order (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result record as JSON")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="CPU threads of the training process; the score on a CPU depends on it (default: the cores, %(default)s)")
    add_spec_options(p)
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    result = evaluate(args.script.read_text(), spec_from_args(args), args.seed, limits_from_args(args, threads=args.threads),
                      warm=not args.cold)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_result(result))
    if result.status != "ok":
        print(f"evocode: {args.script}: {result.status}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _read_script(path: Path) -> str:
    """The source of a script the options already found readable, or a ValueError saying in one line why it does not parse."""
    source = path.read_text()
    try:
        compile(source, str(path), "exec")
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"{path} does not parse ({getattr(e, 'msg', e)}, line {getattr(e, 'lineno', '?')}); fix the script first") from None
    return source


def _fail(message: str) -> int:
    print(f"evocode: {message}", file=sys.stderr)
    return 2


_MUTATORS_HELP = ("mutators to use: names, categories, all, builtin, package.module:Name or path/file.py:Name "
                  "(default: all; `builtin mine.py:Mine` adds a plugin to the built-ins)")
_FORCE_HELP = "continue a run although its mutators' code, its corpus or the installed versions changed (the run records it)"


def add_mutate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mutate", help="show the edits the mutators propose for a script, or list the mutators")
    p.add_argument("script", type=script_file, nargs="?")
    p.add_argument("--n", type=positive_int, default=10, help="how many variants to show (default %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed of the proposals (default %(default)s)")
    p.add_argument("--mutators", type=mutator_item, nargs="+", default=None, metavar="M", help=_MUTATORS_HELP)
    p.add_argument("--list", action="store_true", help="list the mutators with category and source, and exit")
    p.set_defaults(run=run_mutate)


def run_mutate(args: argparse.Namespace) -> int:
    if args.list and args.script is not None:
        raise OptionError(f"--list shows the mutators and takes no SCRIPT (got {args.script}); drop one of them")
    if args.script is None and not args.list:
        raise OptionError("mutate needs a SCRIPT to mutate (or --list)")
    registered = _selected(args.mutators)
    if args.list:
        print(describe_mutators(registered))
        return 0
    try:
        source = _read_script(args.script)
    except ValueError as e:
        return _fail(str(e))
    parent = Genome(source)
    rng = np.random.default_rng(args.seed)
    variants = sample_variants(parent, [r.mutator for r in registered], rng, args.n)
    for index, outcome in enumerate(variants, 1):
        print(describe_variant(parent, outcome, f"variant {index}/{args.n}", str(args.script)))
    return 0 if variants else _fail(f"no mutator found a site in {args.script}")


def add_evolve_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = EvolveConfig()
    p = subparsers.add_parser("evolve", help="evolve a seed script: the main job")
    p.add_argument("script", type=script_file)
    p.add_argument("--population", type=population_int, default=None,
                   help=f"programs per generation (default {defaults.population}, or more so that every slot has a child to evaluate)")
    p.add_argument("--generations", type=non_negative_int, default=defaults.generations, help="generations after the first (default %(default)s)")
    p.add_argument("--tournament", type=positive_int, default=defaults.tournament, help="tournament size (default %(default)s)")
    p.add_argument("--elite", type=non_negative_int, default=defaults.elite, help="best programs carried into the next generation (default %(default)s)")
    p.add_argument("--cx", type=probability, default=defaults.cx, help="probability that a child comes from crossover (default %(default)s)")
    p.add_argument("--model", type=probability, default=defaults.model,
                   help="probability that a child not from crossover takes the constants a model of the good and bad "
                        "programs so far proposes (several at once, as TPE does); of the seed's first children, exactly that share "
                        "(default %(default)s)")
    p.add_argument("--reach", type=probability, default=defaults.reach,
                   help="until what a program costs is known, how far from the seed's values the model's draws go, as a "
                        "share of the box's reach: 1 is the whole box, whose corners can take many times the seed's "
                        "time (default %(default)s)")
    p.add_argument("--cost-share", type=share, default=defaults.cost_share,
                   help="the model passes over draws its cost model predicts to take more than this share of the time "
                        "limit while a cheaper one is at hand; above 1 the filter only drops what cannot finish "
                        "(default %(default)s)")
    p.add_argument("--stack", type=probability, default=defaults.stack,
                   help="probability that a child not from crossover takes on a change that helped another program, "
                        "rather than a fresh mutation (default %(default)s)")
    p.add_argument("--lag", type=non_negative_int, default=None,
                   help="of each next generation's children, how many are bred a generation early, so that they fill "
                        "the slots the current generation's slowest evaluations leave idle (default: one fewer than "
                        "the slots; 0 with --rungs above 1)")
    p.add_argument("--workers", type=positive_int, default=defaults.workers, help="evaluations at once without GPUs (default: the number of cores, %(default)s)")
    p.add_argument("--gpus", default="auto", help="GPUs to use, by index (0,1,...), 'auto' (every GPU this machine has) or 'none' (default %(default)s)")
    p.add_argument("--per-gpu", type=positive_int, default=DEFAULT_PER_GPU, help="candidates at once on each GPU (default %(default)s)")
    add_executor_options(p, resuming=False)
    p.add_argument("--seed", type=seed_int, default=defaults.seed, help="seed of every random choice and of every evaluation (default %(default)s)")
    p.add_argument("--mutators", type=mutator_item, nargs="+", default=[], metavar="M", help=_MUTATORS_HELP)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=new_or_existing_run_dir, default=None, help="where the run lives (default runs/NAME)")
    where.add_argument("--name", type=run_name, default=None, help="name of the run directory under runs/ (default SCRIPT-DATE-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    p.add_argument("--time-factor", type=time_factor, default=None, metavar="F",
                   help="a time-fair search: a candidate may take at most F times the seed's time (default: a "
                        f"token-fair one, where the timeout, {TIMEOUT_FACTOR:g} × the seed's time and at least "
                        f"{MIN_TIMEOUT_S:g} s, only catches hangs)")
    p.add_argument("--no-credit", action="store_true", help="draw mutators uniformly instead of by what helped so far")
    p.add_argument("--no-adaptive-steps", action="store_true",
                   help="keep each numeric mutator's step size fixed instead of growing it where big steps helped")
    p.add_argument("--seeds", type=positive_int, default=defaults.seeds,
                   help="evaluation seeds an elite candidate is trained with at most; its fitness is their mean (default %(default)s; 1: off)")
    p.add_argument("--precision", type=bits_per_byte, default=defaults.precision,
                   help="stop re-evaluating a candidate once its mean's standard error is this small, in bits/byte (default: never before --seeds)")
    p.add_argument("--finalists", type=non_negative_int, default=defaults.finalists,
                   help="at the run's end, the best N programs ever evaluated get at least a second seed, ranked again "
                        "until the best N by mean all have one, so the winner is not the luckiest near copy (default %(default)s: off)")
    p.add_argument("--rungs", type=positive_int, default=defaults.rungs,
                   help="successive halving over token budgets: children are screened on budget/eta^(rungs-1) tokens and the "
                        "best 1/eta climb to the full budget; more children for about the same training tokens (default %(default)s: off)")
    p.add_argument("--eta", type=eta_int, default=defaults.eta,
                   help="with --rungs, each rung trains eta times the tokens of the one below on the best 1/eta of it (default %(default)s)")
    add_spec_options(p)
    p.set_defaults(run=run_evolve)


def run_dir_parser(subparsers: argparse._SubParsersAction, name: str, text: str, run) -> argparse.ArgumentParser:
    """A command that works on one run directory; the directory is checked to hold a run before the command starts."""
    p = subparsers.add_parser(name, help=text)
    p.add_argument("run_dir", type=existing_run, metavar="RUNDIR")
    p.set_defaults(run=run)
    return p


def add_resume_parser(subparsers: argparse._SubParsersAction) -> None:
    p = run_dir_parser(subparsers, "resume", "continue a stopped run where it stopped, or extend a finished one", run_resume)
    p.add_argument("--generations", type=non_negative_int, default=None,
                   help="run until this many generations after the first (more than the run has: extend it)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument("--force", action="store_true", help=_FORCE_HELP)
    add_executor_options(p, resuming=True)


def add_status_parser(subparsers: argparse._SubParsersAction) -> None:
    p = run_dir_parser(subparsers, "status", "running, finished or interrupted; evaluations; best so far and its gain", run_status)
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def add_best_parser(subparsers: argparse._SubParsersAction) -> None:
    run_dir_parser(subparsers, "best", "the best program's edits and its diff against the seed", run_best)


def add_show_parser(subparsers: argparse._SubParsersAction) -> None:
    p = run_dir_parser(subparsers, "show", "one candidate's score, edits and diff against the seed", run_show)
    p.add_argument("candidate", metavar="ID", help="a candidate id, as in results.tsv (e.g. g001-003)")


def add_runs_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("runs", help="the runs in a directory: state, seed script, best, gain, evaluations, last activity")
    p.add_argument("directory", type=existing_dir, nargs="?", default=str(RUNS_ROOT), metavar="DIR", help="(default %(default)s)")
    p.set_defaults(run=run_runs)


def run_evolve(args: argparse.Namespace) -> int:
    try:
        seed_source = _read_script(args.script)
    except ValueError as e:
        return _fail(str(e))
    gpus = gpus_from_args(args)
    slots = Slots(args.workers, gpus, args.per_gpu, args.cold)
    population = args.population or default_population(slots, args.elite)
    check_population(population, args.elite, args.tournament, vars(EvolveConfig()))
    config = EvolveConfig(
        population=population, generations=args.generations, tournament=args.tournament, elite=args.elite,
        cx=args.cx, model=args.model, reach=args.reach, cost_share=args.cost_share, stack=args.stack, workers=args.workers, gpus=gpus, per_gpu=args.per_gpu, cold=args.cold, seed=args.seed,
        mutators=tuple(args.mutators), credit=not args.no_credit, adaptive_steps=not args.no_adaptive_steps,
        seeds=args.seeds, precision=args.precision, finalists=args.finalists, rungs=args.rungs, eta=args.eta, lag=args.lag, **executor_from_args(args),
    )
    run_dir = args.run_dir or default_run_dir(args.name or f"{args.script.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = RunSettings(
        seed_source, args.script.name, config, spec_from_args(args), limits_from_args(args, slots.threads),
        auto_timeout=args.timeout is None or args.time_factor is not None, data=data_source(args.data),
        time_factor=args.time_factor,
    )
    return _run(settings, run_dir, progress=not args.no_progress, force=args.force)


def run_resume(args: argparse.Namespace) -> int:
    settings = stored_settings(args.run_dir)
    if args.generations is not None:
        if args.generations < settings.config.generations:
            raise OptionError(f"--generations {args.generations} is fewer than the {settings.config.generations} "
                              f"{args.run_dir} already plans; a run only grows: pass {settings.config.generations} or more")
        settings = replace(settings, config=replace(settings.config, generations=args.generations))
    settings = replace(settings, config=replace(settings.config, **executor_from_args(args, settings.config)))
    return _run(settings, args.run_dir, progress=not args.no_progress, force=args.force)


def _selected(selection: list[str] | None):
    """The registered mutators a --mutators selection names; a selection that names none usable is an OptionError."""
    try:
        registered = select_mutators(selection)
    except ValueError as e:
        raise OptionError(f"--mutators: {e}") from None
    if not registered:
        raise OptionError(f"--mutators {' '.join(selection or ())} selects no mutator; see `python -m evocode mutate --list`")
    return registered


def _run(settings: RunSettings, run_dir: Path, progress: bool, force: bool) -> int:
    mutators = [entry.mutator for entry in _selected(list(settings.config.mutators) or None)]
    existed, had_run = run_dir.exists(), holds_run(run_dir)
    print(f"evocode: run directory {run_dir}", file=sys.stderr)
    try:
        with RunStore(run_dir) as store:
            done = store.evaluated()
            if had_run and force:
                pin(store, settings, mutators, force=True)
            record_start(store)
    except RunLocked as e:
        return _fail(str(e))
    bar = Progress(settings.config.planned_evaluations, done) if progress else None
    try:
        evolve(settings, run_dir, mutators, on_result=bar or (lambda *_: None))
    except (RunLocked, SeedFailed) as e:
        return _fail(str(e))
    except BaseException:
        if not had_run:
            _discard_unstarted(run_dir, existed)
        raise
    finally:
        if bar:
            bar.close()
        _record_end(run_dir)
    held_out = hidden_test(run_dir, settings)
    print(_status(run_dir))
    if held_out is not None:
        print(held_out.line())
    print(f"evocode: report {write_report(run_dir)}", file=sys.stderr)
    return 0


def _record_end(run_dir: Path) -> None:
    """The driver's end time, unless the run directory is gone (discarded) or already another driver's."""
    if holds_run(run_dir):
        with contextlib.suppress(RunLocked), RunStore(run_dir) as store:
            record_end(store)


def _discard_unstarted(run_dir: Path, existed: bool) -> None:
    """A new run that stopped before its first result leaves nothing behind (an empty directory it was given stays)."""
    if holds_run(run_dir):
        with RunStore.reader(run_dir) as store:
            if store.evaluated():
                return
    if run_dir.is_dir():
        shutil.rmtree(run_dir)
        if existed:
            run_dir.mkdir()


def _status(run_dir: Path) -> str:
    with RunStore.reader(run_dir) as store:
        settings = RunSettings.from_json(store.get("settings"))
        state = run_state(run_dir, store, settings)
        evaluated = store.evaluated()
        status = format_status(run_dir, evaluated, store.event_counts("mutator-failed"),
                               state=state.describe(run_dir), planned=state.planned, rungs=store.rungs())
    return status + "\n" + format_what_helped(what_helped_rows(evaluated))


def run_status(args: argparse.Namespace) -> int:
    if args.json:
        with RunStore.reader(args.run_dir) as store:
            settings = RunSettings.from_json(store.get("settings"))
            state = run_state(args.run_dir, store, settings)
            print(json.dumps(status_record(args.run_dir, state, store.evaluated(), store.rungs()), indent=1))
    else:
        print(_status(args.run_dir))
        with RunStore.reader(args.run_dir) as store:
            held_out = stored_hidden_test(store)
        if held_out is not None:
            print(held_out.line())
    return 0


def run_best(args: argparse.Namespace) -> int:
    settings = stored_settings(args.run_dir)
    with RunStore.reader(args.run_dir) as store:
        report = best_report(settings, store.evaluated())
    if report is None:
        return _fail(f"{args.run_dir} has no successful evaluation yet")
    print(report, end="")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with RunStore.reader(args.run_dir) as store:
        settings = RunSettings.from_json(store.get("settings"))
        candidates = {c.id: c for c in store.candidates()}
        results = store.results()
        evaluated = store.evaluated()
        screened = screened_out(list(candidates.values()), evaluated, store.rungs())
    candidate = candidates.get(args.candidate)
    if candidate is None:
        known = f"{min(candidates)} … {max(candidates)}" if candidates else "none yet"
        raise OptionError(f"no candidate {args.candidate!r} in {args.run_dir} (its candidates: {known}); pass an id from its results.tsv")
    shown = next((e for e in evaluated if e.candidate.id == candidate.id), None)
    result = results.get(candidate.id) or next((e.result for e in screened if e.candidate.id == candidate.id), None)
    print(explain(candidate, result, seed_of(evaluated), shown and fitness(shown)), end="")
    print(seed_diff(settings.seed_source, candidate.code, settings.seed_name, f"{candidate.id}.py"), end="")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    table = describe_runs(args.directory)
    print(table or f"no evocode runs in {args.directory}")
    return 0


def add_insight_parsers(subparsers: argparse._SubParsersAction) -> None:
    run_dir_parser(subparsers, "report", "write progress.png and report.html for a finished run", run_report)
    p = run_dir_parser(subparsers, "export", "a candidate's path from the seed as a git repository, one commit per edit", run_export)
    p.add_argument("--git", type=Path, required=True, metavar="DIR", help="a new (or empty) directory for the repository")
    p.add_argument("--candidate", default=None, metavar="ID", help="the candidate to export (default: the best)")
    p = run_dir_parser(subparsers, "distill", "which of the best's edits carry its gain: ablation, minimal set, transfer", run_distill)
    p.add_argument("--candidate", default=None, metavar="ID", help="the candidate to distill (default: the best)")
    p.add_argument("--seeds", type=positive_int, default=MIN_SEEDS, help="fresh evaluation seeds per program (default %(default)s)")
    p.add_argument("--transfer-budget", type=positive_int, default=None, metavar="TOKENS",
                   help=f"training tokens of the transfer check (default {TRANSFER_FACTOR} × the run's budget)")
    p.add_argument("--transfer-data", type=data_file, default=None, metavar="FILE", help="also check transfer to this text corpus")
    p.add_argument("--workers", type=positive_int, default=None, help="evaluations at once (default: the run's)")
    p = run_dir_parser(subparsers, "add", "queue a hand-written variant of the seed for the run's next generation", run_add)
    p.add_argument("variant", type=script_file)


def run_report(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))  # a run that is not ready raises a ValueError: one line, exit 2 (main)
    return 0


def run_export(args: argparse.Namespace) -> int:
    run = load_finished_run(args.run_dir)
    candidate = run.candidate(args.candidate)
    hypotheses = {m.name: m.hypothesis for m in load_mutators(list(run.settings.config.mutators) or None)}
    commits = export_git(run, candidate, args.git, hypotheses)
    print(f"{args.git}: {commits} commits from {run.settings.seed_name} to {candidate.candidate.id}; see `git -C {args.git} log -p`")
    return 0


def run_distill(args: argparse.Namespace) -> int:
    options = DistillOptions(args.candidate, args.seeds, args.transfer_budget, args.transfer_data, args.workers)
    try:
        distill_run(args.run_dir, options)
    except RunLocked as e:
        return _fail(str(e))
    print((args.run_dir / "distill.md").read_text(), end="")
    write_report(args.run_dir)
    return 0


def run_add(args: argparse.Namespace) -> int:
    source = _read_script(args.variant)
    with RunStore.reader(args.run_dir) as store:  # a running driver holds the lock; it takes the queue at its next generation
        queue_variant(store, args.variant.name, source)
    print(f"{args.variant} queued: a running driver takes it at its next generation; a stopped run on `python -m evocode "
          f"resume {args.run_dir}`; a finished run when given more generations (`python -m evocode resume {args.run_dir} --generations G`)")


def add_what_helped_parser(subparsers: argparse._SubParsersAction) -> None:
    p = run_dir_parser(subparsers, "what-helped", "per mutator (or mutator and site): tries, mean paired Δ, share improved",
                       run_what_helped)
    p.add_argument("--sites", action="store_true", help="one row per mutator and site")


def run_what_helped(args: argparse.Namespace) -> int:
    with RunStore.reader(args.run_dir) as store:
        print(format_what_helped(what_helped_rows(store.evaluated(), per_site=args.sites)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evocode", description="Evolve a training script by editing its source code.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_mutate_parser(subparsers)
    add_evolve_parser(subparsers)
    add_resume_parser(subparsers)
    add_status_parser(subparsers)
    add_best_parser(subparsers)
    add_show_parser(subparsers)
    add_runs_parser(subparsers)
    add_insight_parsers(subparsers)
    add_what_helped_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CorpusError, ValueError, ClusterError) as e:
        return _fail(str(e))
    except BrokenPipeError:
        # The reader closed the pipe (`status RUN | head`): what it did not read is not an error worth a traceback.
        # Python flushes stdout again at exit; pointed at /dev/null, that flush cannot fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
