"""The local executor against a two-worker Dask cluster on this machine: the same run, and what scheduling costs.

Starts `dask scheduler` and two `dask worker --nthreads 1` processes on
127.0.0.1, runs the same tiny evolution (same seed, so the same programs and
scores) on the local executor with two workers and on the cluster, and
reports for each the run's wall time and evaluations per hour, and the
per-candidate scheduling overhead: jobs sent one at a time, the time from
handing a job to the executor to getting its result back, less the
evaluation's own wall time (measured inside `evaluate` on the worker). That
is measured first, and its first job is left out: it starts the workers'
fork servers, so both runs that follow start warm.

    python benchmarks/executors.py [--population 4] [--generations 2] [--budget 16384] [--jobs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import machine, table, write_section

from evocode.data import prepare_corpus
from evocode.evaluation.runner import Limits
from evocode.evolve import evolve
from evocode.executors import open_executor
from evocode.executors.local import Job
from evocode.mutation import load_mutators
from evocode.settings import EvolveConfig, RunSettings
from evocode.spec import EvalSpec

REPO = Path(__file__).resolve().parent.parent
SEED_SCRIPT = REPO / "seeds" / "train.py"
WORKERS = 2


def start_cluster(directory: Path) -> tuple[list[subprocess.Popen], Path]:
    """A scheduler and two single-threaded workers, as the README starts them; returns the processes and the scheduler file."""
    file = directory / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(directory / "cluster.log", "ab")
    processes = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(file)], env=env, stdout=log, stderr=log)]
    processes += [subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(file), "--nthreads", "1",
                                    "--host", "127.0.0.1"], env=env, stdout=log, stderr=log) for _ in range(WORKERS)]
    from distributed import Client

    with Client(scheduler_file=str(file), timeout=60) as client:
        client.wait_for_workers(WORKERS, timeout=120)
    return processes, file


def run(config: EvolveConfig, spec: EvalSpec, limits: Limits) -> dict:
    """One evolution in a fresh run directory: wall time, evaluations, and every score (to check both runs agree)."""
    settings = RunSettings(SEED_SCRIPT.read_text(), "train.py", config, spec, limits)
    with tempfile.TemporaryDirectory(prefix="evocode-executors-") as run_dir:
        started = time.perf_counter()
        evaluated = evolve(settings, Path(run_dir), load_mutators())
        wall = time.perf_counter() - started
    results = [r for e in evaluated for r in (e.result, *e.reevaluations)]
    return {"wall": wall, "evaluations": len(results), "per_hour": len(results) / wall * 3600,
            "scores": [(e.candidate.code_hash, r.seed, r.val_bpb) for e in evaluated for r in (e.result, *e.reevaluations)]}


def scheduling_overhead(config: EvolveConfig, spec: EvalSpec, limits: Limits, jobs: int) -> list[float]:
    """Per job, sent alone: round trip through the executor less the evaluation's own wall time."""
    code = SEED_SCRIPT.read_text()
    overheads = []
    with open_executor(config) as evaluate_many:
        for i in range(jobs + 1):
            started = time.perf_counter()
            ((_, result),) = evaluate_many([Job(f"overhead-{i}", code, i, spec)], limits)
            if i:  # the first job starts the fork servers
                overheads.append(time.perf_counter() - started - result.wall_seconds)
    return overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--budget", type=int, default=16384)
    parser.add_argument("--jobs", type=int, default=8, help="jobs sent one at a time to measure the scheduling overhead")
    args = parser.parse_args()
    spec = EvalSpec(budget=args.budget, eval_tokens=4096, corpus_dir=str(prepare_corpus().directory), device="cpu")
    limits = Limits(threads=max(1, (os.cpu_count() or 1) // WORKERS))
    local = EvolveConfig(population=args.population, generations=args.generations, workers=WORKERS, seeds=1)
    with tempfile.TemporaryDirectory(prefix="evocode-cluster-") as directory:
        processes, file = start_cluster(Path(directory))
        try:
            cluster = EvolveConfig(**{**vars(local), "executor": "dask", "scheduler_file": str(file)})
            measured = {name: {"overheads": scheduling_overhead(config, spec, limits, args.jobs), **run(config, spec, limits)}
                        for name, config in (("local (2 loky workers)", local), ("Dask (2 local workers)", cluster))}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait()
    same = len({json.dumps(m["scores"]) for m in measured.values()}) == 1
    rows = [[name, f"{m['evaluations']}", f"{m['wall']:.1f}", f"{m['per_hour']:.0f}",
             f"{statistics.median(m['overheads']) * 1000:.0f}", f"{max(m['overheads']) * 1000:.0f}"] for name, m in measured.items()]
    body = (
        "## Executors: local against a two-worker Dask cluster on one machine (`benchmarks/executors.py`)\n\n"
        f"Machine: {machine()}. The same evolution (population {args.population}, {args.generations} generations after the "
        f"first, budget {args.budget} tokens, one evaluation seed, 2 slots, CPU) on each executor; scheduling overhead: "
        f"{args.jobs} jobs sent one at a time, round trip less the evaluation's own wall time (measured first; its first job, "
        "which starts the fork servers, left out, so both runs start warm). "
        f"Same programs and scores on both: {'yes' if same else 'NO'}.\n\n"
        + table(["executor", "evaluations", "wall s", "evaluations/h", "overhead per candidate, median ms", "max ms"], rows)
    )
    write_section("executors", body)
    print(body)


if __name__ == "__main__":
    main()
