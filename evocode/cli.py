"""`python -m evocode ...`: each command parses its options and calls one function."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from evocode.data import CorpusError, data_source, prepare_corpus
from evocode.evaluation.runner import Limits, evaluate, format_result
from evocode.evaluation.workers import detect_gpus
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
from evocode.outputs import best_report, format_status
from evocode.progress import Progress
from evocode.settings import MIN_TIMEOUT_S, TIMEOUT_FACTOR, EvolveConfig, RunSettings, stored_settings
from evocode.spec import DEFAULT_BUDGET, DEFAULT_CONTEXT_LENGTH, DEFAULT_EVAL_TOKENS, EvalSpec
from evocode.store import RunLocked, RunStore


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="training tokens per candidate (default %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="a text file to train and validate on, or stdlib for the Python standard library's sources "
                             "(default: evocode's corpus, public-domain Bible translations)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT_LENGTH, help="context length of training and validation windows (default %(default)s)")
    parser.add_argument("--eval-tokens", type=int, default=DEFAULT_EVAL_TOKENS, help="held-out tokens the score averages over (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds before a candidate is killed (eval: {Limits.timeout_s:g}; evolve: "
                             f"{TIMEOUT_FACTOR:g} × the seed's time, at least {MIN_TIMEOUT_S:g})")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, help="memory limit of a candidate in MiB (default %(default)s)")
    parser.add_argument("--cold", action="store_true",
                        help="start each candidate as a new Python process instead of forking it from a warm worker (same scores, slower)")
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                        help="do not confine candidates with Landlock (by default a candidate reads only what imports need, "
                             "writes only its own directory, opens no TCP connection and signals nothing outside itself)")


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    corpus = prepare_corpus(args.data)
    return EvalSpec(
        budget=args.budget, context_length=args.context, eval_tokens=args.eval_tokens,
        corpus_dir=str(corpus.directory), device=args.device,
    )


def limits_from_args(args: argparse.Namespace, threads: int) -> Limits:
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return Limits(
        timeout_s=Limits.timeout_s if args.timeout is None else args.timeout, memory_mb=args.memory, threads=threads,
        sandbox=args.sandbox,
    )


def gpus_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The GPUs a run spreads its slots over: none when the device is the CPU."""
    if args.gpus == "none" or args.device == "cpu":
        return ()
    gpus = detect_gpus() if args.gpus == "auto" else tuple(g.strip() for g in args.gpus.split(","))
    if not all(g.isdigit() for g in gpus):
        raise ValueError(f"--gpus takes GPU indices like 0,1, 'auto' or 'none', got {args.gpus!r}")
    if gpus and args.device not in ("auto", "cuda", "cuda:0"):
        raise ValueError(f"--device {args.device} conflicts with --gpus: each candidate sees only its own GPU, as cuda:0; "
                         "use --device cuda or leave it out")
    return gpus


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="train and score one script under the harness")
    p.add_argument("script", type=Path)
    p.add_argument("--seed", type=int, default=0, help="evaluation seed: initialization and batch order (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result record as JSON")
    add_spec_options(p)
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    try:
        source = args.script.read_text()
    except OSError as e:
        return _fail(f"cannot read {args.script}: {e.strerror}; pass the path of a training script")
    result = evaluate(source, spec_from_args(args), args.seed, limits_from_args(args, threads=os.cpu_count() or 1), warm=not args.cold)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_result(result))
    if result.status != "ok":
        print(f"evocode: {args.script}: {result.status}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _read_script(path: Path) -> str:
    """The script's source, or a ValueError saying in one line why it cannot be used."""
    try:
        source = path.read_text()
        compile(source, str(path), "exec")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}; pass the path of a training script") from None
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"{path} does not parse ({getattr(e, 'msg', e)}, line {getattr(e, 'lineno', '?')}); fix the script first") from None
    return source


def _fail(message: str) -> int:
    print(f"evocode: {message}", file=sys.stderr)
    return 2


def add_mutate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mutate", help="show the edits the mutators propose for a script, or list the mutators")
    p.add_argument("script", type=Path, nargs="?")
    p.add_argument("--n", type=int, default=10, help="how many variants to show (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the proposals (default %(default)s)")
    p.add_argument(
        "--mutators", nargs="+", default=None, metavar="M",
        help="mutators to use: names, categories, package.module:Name or path/file.py:Name (default: all)",
    )
    p.add_argument("--list", action="store_true", help="list the mutators with category and source, and exit")
    p.set_defaults(run=run_mutate)


def run_mutate(args: argparse.Namespace) -> int:
    registered = select_mutators(args.mutators)
    if args.list:
        print(describe_mutators(registered))
        return 0
    if args.script is None:
        return _fail("mutate needs a SCRIPT to mutate (or --list)")
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


def add_evolve_parsers(subparsers: argparse._SubParsersAction) -> None:
    defaults = EvolveConfig()
    p = subparsers.add_parser("evolve", help="evolve a seed script: the main job")
    p.add_argument("script", type=Path)
    p.add_argument("--population", type=int, default=None,
                   help=f"programs per generation (default {defaults.population}, or more so that every slot has a child to evaluate)")
    p.add_argument("--generations", type=int, default=defaults.generations, help="generations after the first (default %(default)s)")
    p.add_argument("--tournament", type=int, default=defaults.tournament, help="tournament size (default %(default)s)")
    p.add_argument("--elite", type=int, default=defaults.elite, help="best programs carried into the next generation (default %(default)s)")
    p.add_argument("--cx", type=float, default=defaults.cx, help="probability that a child comes from crossover (default %(default)s)")
    p.add_argument("--workers", type=int, default=defaults.workers, help="evaluations at once without GPUs (default: the number of cores, %(default)s)")
    p.add_argument("--gpus", default="auto", help="GPUs to use, by index (0,1,...), 'auto' (every GPU this machine has) or 'none' (default %(default)s)")
    p.add_argument("--per-gpu", type=int, default=DEFAULT_PER_GPU, help="candidates at once on each GPU (default %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice and of every evaluation (default %(default)s)")
    p.add_argument("--mutators", nargs="+", default=[], metavar="M",
                   help="mutators to use: names, categories, package.module:Name or path/file.py:Name (default: all)")
    p.add_argument("--run-dir", type=Path, default=None, help="where the run lives (default runs/NAME)")
    p.add_argument("--name", default=None, help="name of the run directory under runs/ (default SCRIPT-DATE-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    add_spec_options(p)
    p.set_defaults(run=run_evolve)
    for name, run, text in (
        ("resume", run_resume, "continue a stopped run where it stopped"),
        ("status", run_status, "generation, evaluations by status, best so far and its gain"),
        ("best", run_best, "the best program's edits and its diff against the seed"),
    ):
        q = subparsers.add_parser(name, help=text)
        q.add_argument("run_dir", type=Path)
        if name == "resume":
            q.add_argument("--no-progress", action="store_true", help="no live progress line")
        q.set_defaults(run=run)


def run_evolve(args: argparse.Namespace) -> int:
    try:
        seed_source = _read_script(args.script)
    except ValueError as e:
        return _fail(str(e))
    gpus = gpus_from_args(args)
    slots = Slots(args.workers, gpus, args.per_gpu, args.cold)
    population = args.population or max(EvolveConfig.population, slots.count + args.elite)
    config = EvolveConfig(
        population=population, generations=args.generations, tournament=args.tournament, elite=args.elite,
        cx=args.cx, workers=args.workers, gpus=gpus, per_gpu=args.per_gpu, cold=args.cold, seed=args.seed,
        mutators=tuple(args.mutators),
    )
    settings = RunSettings(
        seed_source, args.script.name, config, spec_from_args(args), limits_from_args(args, slots.threads),
        auto_timeout=args.timeout is None, data=data_source(args.data),
    )
    run_dir = args.run_dir or Path("runs") / (args.name or f"{args.script.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    return _run(settings, run_dir, progress=not args.no_progress)


def run_resume(args: argparse.Namespace) -> int:
    settings = stored_settings(args.run_dir)
    if settings is None:
        return _fail(f"{args.run_dir} holds no evocode run; start one with `python -m evocode evolve SCRIPT`")
    return _run(settings, args.run_dir, progress=not args.no_progress)


def _run(settings: RunSettings, run_dir: Path, progress: bool) -> int:
    mutators = load_mutators(list(settings.config.mutators) or None)
    if not mutators:
        return _fail("no mutators selected; see `python -m evocode mutate --list`")
    print(f"evocode: run directory {run_dir}", file=sys.stderr)
    with RunStore.reader(run_dir) as store:
        done = store.evaluated()
    bar = Progress(settings.config.planned_evaluations, done) if progress else None
    try:
        evaluated = evolve(settings, run_dir, mutators, on_result=bar or (lambda *_: None))
    except (RunLocked, SeedFailed) as e:
        return _fail(str(e))
    finally:
        if bar:
            bar.close()
    held_out = hidden_test(run_dir, settings)
    print(_status(run_dir, evaluated))
    if held_out is not None:
        print(held_out.line())
    print(f"evocode: report {write_report(run_dir)}", file=sys.stderr)
    return 0


def _status(run_dir: Path, evaluated: list) -> str:
    with RunStore.reader(run_dir) as store:
        return format_status(run_dir, evaluated, store.event_counts("mutator-failed"))


def run_status(args: argparse.Namespace) -> int:
    if stored_settings(args.run_dir) is None:
        return _fail(f"{args.run_dir} holds no evocode run")
    with RunStore.reader(args.run_dir) as store:
        evaluated = store.evaluated()
        held_out = stored_hidden_test(store)
    print(_status(args.run_dir, evaluated))
    if held_out is not None:
        print(held_out.line())
    return 0


def run_best(args: argparse.Namespace) -> int:
    settings = stored_settings(args.run_dir)
    if settings is None:
        return _fail(f"{args.run_dir} holds no evocode run")
    with RunStore.reader(args.run_dir) as store:
        report = best_report(settings.seed_source, settings.seed_name, store.evaluated())
    if report is None:
        return _fail(f"{args.run_dir} has no successful evaluation yet")
    print(report, end="")
    return 0


def add_insight_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write progress.png and report.html for a finished run")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(run=run_report)
    p = subparsers.add_parser("export", help="a candidate's path from the seed as a git repository, one commit per edit")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--git", type=Path, required=True, metavar="DIR", help="a new (or empty) directory for the repository")
    p.add_argument("--candidate", default=None, metavar="ID", help="the candidate to export (default: the best)")
    p.set_defaults(run=run_export)
    p = subparsers.add_parser("distill", help="which of the best's edits carry its gain: ablation, minimal set, transfer")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--candidate", default=None, metavar="ID", help="the candidate to distill (default: the best)")
    p.add_argument("--seeds", type=int, default=MIN_SEEDS, help="fresh evaluation seeds per program (default %(default)s)")
    p.add_argument("--transfer-budget", type=int, default=None, metavar="TOKENS",
                   help=f"training tokens of the transfer check (default {TRANSFER_FACTOR} × the run's budget)")
    p.add_argument("--transfer-data", type=Path, default=None, metavar="FILE", help="also check transfer to this text corpus")
    p.add_argument("--workers", type=int, default=None, help="evaluations at once (default: the run's)")
    p.set_defaults(run=run_distill)
    p = subparsers.add_parser("add", help="queue a hand-written variant of the seed for the run's next generation")
    p.add_argument("run_dir", type=Path)
    p.add_argument("variant", type=Path)
    p.set_defaults(run=run_add)


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
    if stored_settings(args.run_dir) is None:
        return _fail(f"{args.run_dir} holds no evocode run; start one with `python -m evocode evolve SCRIPT`")
    source = _read_script(args.variant)
    with RunStore.reader(args.run_dir) as store:  # a running driver holds the lock; it takes the queue at its next generation
        queue_variant(store, args.variant.name, source)
    print(f"{args.variant} queued: a running driver takes it at its next generation; a stopped run on `python -m evocode "
          f"resume {args.run_dir}`; a finished run when given more generations (`evolve SEED --run-dir {args.run_dir} --generations G`)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evocode", description="Evolve a training script by editing its source code.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_mutate_parser(subparsers)
    add_evolve_parsers(subparsers)
    add_insight_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CorpusError, ValueError) as e:
        return _fail(str(e))
