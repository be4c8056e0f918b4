"""Where an evolution's time goes: warm fork-server workers against cold process starts, in one run.

Runs the same evolution twice, warm and cold, with the same seed (so the
same programs and, on a CPU, the same scores), and reports per candidate the
cost of scoring (exporting the trained model in the candidate's process, which
is done only to be scored, plus the scorer process), the overhead (wall −
training − scoring: process start, imports, building the model, the runner's
own work), the workers' utilization (Σ training seconds ÷ (slots × wall)) and
evaluations per hour. With GPUs, GPU utilization is
sampled with nvidia-smi during each run.

    python benchmarks/throughput.py [--population 8] [--generations 4] [--budget 400000] [--workers CORES]

The defaults are those of `python -m evocode evolve seeds/train.py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from results import machine, table, write_section

from evocode.data import prepare_corpus
from evocode.evaluation.workers import detect_gpus
from evocode.evolve import evolve
from evocode.executors.local import DEFAULT_PER_GPU
from evocode.mutation import load_mutators
from evocode.settings import EvolveConfig, RunSettings
from evocode.evaluation.runner import Limits
from evocode.spec import EvalSpec
from evocode.store import RunStore

SEED_SCRIPT = Path(__file__).resolve().parent.parent / "seeds" / "train.py"


def measure(settings: RunSettings) -> dict:
    """One evolution in a fresh run directory: its wall time and every evaluation's timings."""
    gpus = settings.config.gpus
    sampler = _gpu_sampler() if gpus else None
    with tempfile.TemporaryDirectory(prefix="evocode-throughput-") as run_dir:
        started, epoch = time.perf_counter(), time.time()
        evaluated = evolve(settings, Path(run_dir), load_mutators())
        wall = time.perf_counter() - started
        with RunStore.reader(Path(run_dir)) as store:
            finished = store.finish_times()
    gpu_util = _gpu_utilization(sampler) if sampler else None
    results = [r for e in evaluated for r in (e.result, *e.reevaluations)]
    # In the order of results: each candidate's own evaluation, then its re-evaluations.
    ends = [finished.get(e.candidate.id if r is e.result else f"{e.candidate.id} seed {r.seed} budget {r.budget}")
            for e in evaluated for r in (e.result, *e.reevaluations)]
    overheads = sorted(r.wall_seconds - r.train_seconds - r.scoring_seconds for r in results if r.status == "ok")
    slots = settings.config.slots.count
    capacity = slots * wall
    between, tails = idle_split([(end - r.wall_seconds, end) for r, end in zip(results, ends) if end], slots, epoch, epoch + wall)
    return {
        # Where the slots' time went: training, scoring, the rest of each evaluation, and no evaluation at all.
        "shares": {"scoring": sum(r.scoring_seconds for r in results) / capacity,
                   "rest of evaluation": sum(r.wall_seconds - r.train_seconds - r.scoring_seconds
                                             for r in results if r.status == "ok") / capacity,
                   # A timeout (also one stopped early for its pace) or a crash records no training: all its slot time.
                   "failed evaluations": sum(r.wall_seconds for r in results if r.status != "ok") / capacity,
                   "idle between evaluations": between / capacity,
                   "idle beside one": tails / capacity},
        "evaluations": len(results),
        "wall": wall,
        "overhead_median": statistics.median(overheads),
        "scoring_median": statistics.median(r.scoring_seconds for r in results if r.status == "ok"),
        "overhead_p90": overheads[min(len(overheads) - 1, int(0.9 * len(overheads)))],
        "utilization": sum(r.train_seconds for r in results) / (slots * wall),
        "per_hour": len(results) / wall * 3600,
        "scores": {(e.candidate.code_hash, r.seed): r.val_bpb for e in evaluated for r in (e.result, *e.reevaluations)},
        "gpu_util": gpu_util,
    }


def idle_split(intervals: list[tuple[float, float]], slots: int, start: float, end: float) -> tuple[float, float]:
    """Idle slot-seconds while no evaluation runs (the driver starting, breeding, recording) and while some do (slots
    waiting beside the last evaluation that what is queued next depends on). An evaluation's start is its commit
    time less its wall time, so the driver's recording counts as idle."""
    events = sorted([(max(start, a), 1) for a, _ in intervals] + [(min(end, b), -1) for _, b in intervals])
    between = tails = 0.0
    busy, last = 0, start
    for t, step in events + [(end, 0)]:
        gap = (slots - min(busy, slots)) * max(0.0, t - last)
        between, tails = (between + gap, tails) if busy == 0 else (between, tails + gap)
        busy, last = busy + step, max(last, t)
    return between, tails


def _gpu_sampler() -> subprocess.Popen:
    return subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
                            stdout=subprocess.PIPE, text=True)


def _gpu_utilization(sampler: subprocess.Popen) -> float:
    sampler.terminate()
    samples = [float(line) for line in sampler.communicate()[0].split() if line.replace(".", "").isdigit()]
    return statistics.mean(samples) if samples else float("nan")


def main() -> None:
    defaults = EvolveConfig()
    parser = argparse.ArgumentParser()
    parser.add_argument("--population", type=int, default=defaults.population)
    parser.add_argument("--generations", type=int, default=defaults.generations)
    parser.add_argument("--budget", type=int, default=EvalSpec.budget)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--per-gpu", type=int, default=DEFAULT_PER_GPU)
    args = parser.parse_args()

    gpus = detect_gpus()
    config = EvolveConfig(population=args.population, generations=args.generations, workers=args.workers,
                          gpus=gpus, per_gpu=args.per_gpu)
    spec = EvalSpec(budget=args.budget, corpus_dir=str(prepare_corpus().directory))
    settings = RunSettings(SEED_SCRIPT.read_text(), "train.py", config, spec, Limits(threads=config.slots.threads))
    runs = {}
    for mode in ("warm", "cold"):
        runs[mode] = measure(replace(settings, config=replace(config, cold=mode == "cold")))
        r = runs[mode]
        print(f"{mode}: {r['evaluations']} evaluations in {r['wall']:.0f} s, overhead median {r['overhead_median']:.2f} s, "
              f"utilization {r['utilization']:.0%}", flush=True)
    same = sum(runs["warm"]["scores"].get(h) == s for h, s in runs["cold"]["scores"].items())
    rows = [[mode, str(r["evaluations"]), f"{r['wall']:.0f}", f"{r['scoring_median']:.2f}", f"{r['overhead_median']:.2f}",
             f"{r['overhead_p90']:.2f}",
             f"{r['utilization']:.0%}", *(f"{share:.0%}" for share in r["shares"].values()), f"{r['per_hour']:.0f}"]
            + ([f"{r['gpu_util']:.0f}%"] if gpus else [])
            for mode, r in runs.items()]
    header = ["workers", "evaluations", "wall s", "scoring median s", "overhead median s", "overhead p90 s", "utilization (training)",
              "scoring", "rest of evaluations", "failed evaluations", "idle: between evaluations", "idle: beside one",
              "evaluations / hour"]
    slots = config.slots
    where = f"{len(gpus)} GPU(s) × {slots.per_gpu} per GPU" if gpus else f"{slots.count} workers × {slots.threads} thread(s)"
    body = "\n\n".join([
        "## Throughput: warm fork-server workers against cold starts (`benchmarks/throughput.py`)",
        f"Command: `python benchmarks/throughput.py --population {args.population} --generations {args.generations} "
        f"--budget {args.budget} --workers {args.workers}`. Machine: {machine()}; {where}.",
        "Scoring = exporting the trained model in the candidate's process (done only to be scored) + the scorer "
        "process's time (loading the exported model, the checks, val_bpb); overhead = an evaluation's wall time − "
        "training − scoring (process start, imports, model build, the runner's own work); utilization = Σ training "
        "seconds ÷ (slots × the run's wall time) of the evaluations that finished; scoring, the rest of those "
        "evaluations, the failed ones (timeouts, those stopped early for their pace included, and crashes: no "
        "training is recorded for them) and idle slots are the other shares of slots × wall time (idle between "
        "evaluations: none runs, while the driver starts, breeds and records; idle beside one: a slot waits while "
        "another runs the last evaluation that anything queued depends on).",
        table(header + (["GPU utilization"] if gpus else []), rows),
        f"Warm over cold: **{runs['cold']['wall'] / runs['warm']['wall']:.2f}×** the evaluations per hour. "
        f"Same programs in both runs, {same} of {len(runs['cold']['scores'])} with the identical score.",
    ])
    write_section("throughput", body)
    print(body)


if __name__ == "__main__":
    main()
