"""`python -m evocode ...`: each command parses its options and calls one function."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from evocode.data import CorpusError, prepare_corpus
from evocode.evaluation.runner import Limits, evaluate, format_result
from evocode.evolve import SeedFailed, evolve
from evocode.genome import Genome
from evocode.mutation import describe_mutators, describe_variant, load_mutators, sample_variants, select_mutators
from evocode.outputs import best_report, format_status
from evocode.progress import Progress
from evocode.search.credit import format_what_helped, what_helped_rows
from evocode.settings import MIN_TIMEOUT_S, TIMEOUT_FACTOR, EvolveConfig, RunSettings, stored_settings
from evocode.spec import DEFAULT_BUDGET, DEFAULT_CONTEXT_LENGTH, DEFAULT_EVAL_TOKENS, EvalSpec
from evocode.store import RunLocked, RunStore


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="training tokens per candidate (default %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="a text file to train and validate on (default: the Python standard library's sources)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT_LENGTH, help="context length of training and validation windows (default %(default)s)")
    parser.add_argument("--eval-tokens", type=int, default=DEFAULT_EVAL_TOKENS, help="held-out tokens the score averages over (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds before a candidate is killed (eval: {Limits.timeout_s:g}; evolve: "
                             f"{TIMEOUT_FACTOR:g} × the seed's time, at least {MIN_TIMEOUT_S:g})")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, help="memory limit of a candidate in MiB (default %(default)s)")


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    corpus = prepare_corpus(args.data)
    return EvalSpec(
        budget=args.budget, context_length=args.context, eval_tokens=args.eval_tokens,
        corpus_dir=str(corpus.directory), device=args.device,
    )


def limits_from_args(args: argparse.Namespace, threads: int) -> Limits:
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return Limits(timeout_s=Limits.timeout_s if args.timeout is None else args.timeout, memory_mb=args.memory, threads=threads)


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
    result = evaluate(source, spec_from_args(args), args.seed, limits_from_args(args, threads=os.cpu_count() or 1))
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
    p.add_argument("--population", type=int, default=defaults.population, help="programs per generation (default %(default)s)")
    p.add_argument("--generations", type=int, default=defaults.generations, help="generations after the first (default %(default)s)")
    p.add_argument("--tournament", type=int, default=defaults.tournament, help="tournament size (default %(default)s)")
    p.add_argument("--elite", type=int, default=defaults.elite, help="best programs carried into the next generation (default %(default)s)")
    p.add_argument("--cx", type=float, default=defaults.cx, help="probability that a child comes from crossover (default %(default)s)")
    p.add_argument("--workers", type=int, default=defaults.workers, help="evaluations at once (default: the number of cores, %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice and of every evaluation (default %(default)s)")
    p.add_argument("--mutators", nargs="+", default=[], metavar="M",
                   help="mutators to use: names, categories, package.module:Name or path/file.py:Name (default: all)")
    p.add_argument("--run-dir", type=Path, default=None, help="where the run lives (default runs/NAME)")
    p.add_argument("--name", default=None, help="name of the run directory under runs/ (default SCRIPT-DATE-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument("--no-credit", action="store_true", help="draw mutators uniformly instead of by what helped so far")
    p.add_argument("--seeds", type=int, default=defaults.seeds,
                   help="evaluation seeds an elite candidate is trained with at most; its fitness is their mean (default %(default)s; 1: off)")
    p.add_argument("--precision", type=float, default=defaults.precision,
                   help="stop re-evaluating a candidate once its mean's standard error is this small, in bits/byte (default: never before --seeds)")
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
    config = EvolveConfig(
        population=args.population, generations=args.generations, tournament=args.tournament, elite=args.elite,
        cx=args.cx, workers=args.workers, seed=args.seed, mutators=tuple(args.mutators), credit=not args.no_credit,
        seeds=args.seeds, precision=args.precision,
    )
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    settings = RunSettings(
        seed_source, args.script.name, config, spec_from_args(args), limits_from_args(args, threads),
        auto_timeout=args.timeout is None, data=None if args.data is None else str(args.data.resolve()),
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
    print(_status(run_dir, evaluated))
    return 0


def _status(run_dir: Path, evaluated: list) -> str:
    with RunStore.reader(run_dir) as store:
        status = format_status(run_dir, evaluated, store.event_counts("mutator-failed"))
    return status + "\n" + format_what_helped(what_helped_rows(evaluated))


def run_status(args: argparse.Namespace) -> int:
    if stored_settings(args.run_dir) is None:
        return _fail(f"{args.run_dir} holds no evocode run")
    with RunStore.reader(args.run_dir) as store:
        evaluated = store.evaluated()
    print(_status(args.run_dir, evaluated))
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


def add_what_helped_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("what-helped", help="per mutator (or mutator and site): tries, mean paired Δ, share improved")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--sites", action="store_true", help="one row per mutator and site")
    p.set_defaults(run=run_what_helped)


def run_what_helped(args: argparse.Namespace) -> int:
    if stored_settings(args.run_dir) is None:
        return _fail(f"{args.run_dir} holds no evocode run")
    with RunStore.reader(args.run_dir) as store:
        print(format_what_helped(what_helped_rows(store.evaluated(), per_site=args.sites)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evocode", description="Evolve a training script by editing its source code.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    add_mutate_parser(subparsers)
    add_evolve_parsers(subparsers)
    add_what_helped_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CorpusError, ValueError) as e:
        return _fail(str(e))
