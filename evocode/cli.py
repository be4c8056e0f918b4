"""`python -m evocode ...`: each command parses its options and calls one function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evocode.data import CorpusError, prepare_corpus
from evocode.evaluate import Limits, evaluate, format_result
from evocode.spec import DEFAULT_BUDGET, DEFAULT_CONTEXT_LENGTH, EvalSpec


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="training tokens per candidate (default %(default)s)")
    parser.add_argument("--data", type=Path, default=None, help="a text file to train and validate on (default: the Python standard library's sources)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT_LENGTH, help="context length of training and validation windows (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=Limits.timeout_s, help="seconds before a candidate is killed (default %(default)s)")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, help="memory limit of a candidate in MiB (default %(default)s)")


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    corpus = prepare_corpus(args.data)
    return EvalSpec(budget=args.budget, context_length=args.context, corpus_dir=str(corpus.directory), device=args.device)


def limits_from_args(args: argparse.Namespace, threads: int) -> Limits:
    return Limits(timeout_s=args.timeout, memory_mb=args.memory, threads=threads)


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


def _fail(message: str) -> int:
    print(f"evocode: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evocode", description="Evolve a training script by editing its source code.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(subparsers)
    # --- mutate: owned by the variation module (add_mutate_parser / run_mutate) ---
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CorpusError, ValueError) as e:
        return _fail(str(e))
