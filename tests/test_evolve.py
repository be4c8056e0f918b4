"""The evolution loop: reproducible, durable, and unstoppable by bad candidates.

Runs are real (real processes, real training) at a budget of two optimizer
steps, so a whole run takes seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO, SEED_SCRIPT, finish_times, lingering_candidates, record_phases, resume_redoing_nothing, sigkill_driver
from evocode.evaluation.runner import Limits
from evocode.evolve import evolve
from evocode.insight.human import queue_variant
from evocode.mutation import load_mutators
from evocode.data import prepare_corpus
from evocode.settings import EvolveConfig, RunSettings, SettingsMismatch, derived_timeout, stored_settings
from evocode.outputs import best_of
from evocode.search.noise import fitness
from evocode.store import Evaluated, RunLocked, RunStore

SABOTEURS = str(REPO / "tests" / "plugins" / "saboteurs.py")
TINY = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "2", "--workers", "2", "--device", "cpu"]
# What the command line gives each of two workers; the in-process runs below use the same, so they match it exactly.
THREADS = max(1, (os.cpu_count() or 1) // 2)


def settings(spec, seed=0, generations=2) -> RunSettings:
    config = EvolveConfig(population=4, generations=generations, workers=2, seed=seed)
    return RunSettings(SEED_SCRIPT.read_text(), "train.py", config, spec, Limits(threads=THREADS))


def run(run_settings: RunSettings, run_dir: Path):
    return evolve(run_settings, run_dir, load_mutators(list(run_settings.config.mutators) or None))


def history(run_dir: Path) -> list[tuple]:
    """Every evaluation in creation order: what was evaluated and what it scored."""
    with RunStore.reader(run_dir) as store:
        return [(e.candidate.id, e.candidate.code_hash, e.result.status, e.result.val_bpb) for e in store.evaluated()]


@pytest.fixture(scope="module")
def reference_run(tiny_spec, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    run(settings(tiny_spec), run_dir)
    return run_dir


def test_a_run_evaluates_the_seed_first_then_its_generations(reference_run):
    runs = history(reference_run)
    assert runs[0][0] == "g000-000"
    assert len(runs) == 4 + 2 * (4 - 2)
    assert {cid[:4] for cid, *_ in runs} == {"g000", "g001", "g002"}


def test_no_program_is_evaluated_twice(reference_run):
    hashes = [code_hash for _, code_hash, _, _ in history(reference_run)]
    assert len(hashes) == len(set(hashes))


def test_the_run_directory_holds_store_results_and_the_best_program(reference_run):
    for name in ("evocode.db", "results.tsv", "best.py", "best.diff"):
        assert (reference_run / name).is_file(), name
    rows = (reference_run / "results.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert len(rows) == 1 + len(history(reference_run))
    best = run_best(reference_run)
    header, code = split_header((reference_run / "best.py").read_text())
    assert code == (reference_run / "candidates" / f"{best.candidate.id}.py").read_text()
    assert header[0].startswith(f"# {best.candidate.id}: val_bpb {fitness(best).describe()}")


def run_best(run_dir: Path) -> Evaluated:
    """The run's best by its mean over its evaluation seeds."""
    with RunStore.reader(run_dir) as store:
        return best_of(store.evaluated())


def split_header(text: str) -> tuple[list[str], str]:
    """best.py's comment header (its lines) and the program below it."""
    lines = text.splitlines(keepends=True)
    count = next(i for i, line in enumerate(lines) if not line.startswith("# "))
    return [line.rstrip("\n") for line in lines[:count]], "".join(lines[count:])


def test_the_command_in_best_py_reproduces_the_best_score_exactly(reference_run):
    header, _ = split_header((reference_run / "best.py").read_text())
    (command,) = [line.split(": ", 1)[1] for line in header if line.startswith("# reproduce (in the run directory): ")]
    assert command.startswith("python -m evocode eval best.py ")
    done = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=reference_run, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    # The command retrains on the run's own evaluation seed: the best's first score, the first of its mean.
    assert f"val_bpb:          {run_best(reference_run).result.val_bpb:.6f}" in done.stdout.splitlines()


def test_the_same_seed_gives_the_same_run(reference_run, tiny_spec, tmp_path):
    run(settings(tiny_spec), tmp_path)
    assert history(tmp_path) == history(reference_run)


def test_a_store_from_before_export_times_were_kept_reads_back_with_them_zero(reference_run, tmp_path):
    with RunStore.reader(reference_run) as store:
        current = store.results()
    assert all(r.export_seconds > 0 for r in current.values() if r.status == "ok")
    old = tmp_path / "old"
    shutil.copytree(reference_run, old)
    with sqlite3.connect(old / "evocode.db") as db:
        for rowid, result in db.execute("SELECT rowid, result FROM evaluations").fetchall():
            record = json.loads(result)
            del record["export_seconds"]
            db.execute("UPDATE evaluations SET result = ? WHERE rowid = ?", (json.dumps(record), rowid))
    with RunStore.reader(old) as store:
        read = store.results()
    assert read == {cid: replace(r, export_seconds=0.0) for cid, r in current.items()}


def test_another_seed_gives_another_run(reference_run, tiny_spec, tmp_path):
    run(settings(tiny_spec, seed=1), tmp_path)
    assert [h for _, h, _, _ in history(tmp_path)][1:] != [h for _, h, _, _ in history(reference_run)][1:]


def test_a_run_killed_mid_generation_resumes_to_the_same_result(reference_run, tmp_path):
    run_dir = tmp_path / "killed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "evocode", "evolve", str(SEED_SCRIPT), *TINY, "--timeout", "120",
         "--seed", "0", "--run-dir", str(run_dir), "--no-progress"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(finish_times(run_dir)) < 5:
        time.sleep(0.2)
    sigkill_driver(driver)
    before = finish_times(run_dir)
    assert 5 <= len(before) < len(finish_times(reference_run)), "the kill did not land mid-run"

    resume_redoing_nothing(run_dir, before)
    assert history(run_dir) == history(reference_run)
    assert (run_dir / "best.py").read_text() == (reference_run / "best.py").read_text()


def test_candidates_that_crash_hang_or_cheat_are_recorded_and_the_run_goes_on(tiny_spec, tmp_path):
    """Three saboteurs make seven distinct programs; each must end with the status its worst edit earns."""
    saboteurs = tuple(f"{SABOTEURS}:{name}" for name in ("Crash", "Hang", "Peek"))
    config = EvolveConfig(population=8, generations=1, model=0.0, workers=2, seed=0, mutators=saboteurs)
    limits = Limits(timeout_s=15, threads=THREADS)
    evaluated = run(RunSettings(SEED_SCRIPT.read_text(), "train.py", config, tiny_spec, limits, auto_timeout=False), tmp_path)
    assert evaluated[0].result.status == "ok"
    for e in evaluated[1:]:
        edits = e.candidate.description
        expected = "crash" if "sabotage_crash" in edits else "timeout" if "sabotage_hang" in edits else "integrity"
        assert e.result.status == expected, (edits, e.result.reason)
    assert {"crash", "timeout", "integrity"} <= {e.result.status for e in evaluated}
    with RunStore.reader(tmp_path) as store:
        assert sorted(store.populations()) == [0, 1], "the run did not go on to its last generation"
    assert lingering_candidates(within_s=5) == {}


def test_a_second_driver_on_the_same_run_is_refused(tmp_path):
    with RunStore(tmp_path):
        with pytest.raises(RunLocked, match="another evocode driver is running"):
            RunStore(tmp_path)


def test_resuming_with_other_settings_is_refused_naming_what_differs(reference_run, tiny_spec):
    with pytest.raises(SettingsMismatch, match=r"other settings \(config.seed\)"):
        run(settings(tiny_spec, seed=7), reference_run)


def test_more_generations_continue_a_finished_run(reference_run, tiny_spec, tmp_path):
    shutil.copytree(reference_run, tmp_path / "longer")
    evaluated = run(settings(tiny_spec, generations=3), tmp_path / "longer")
    assert [e.candidate.id for e in evaluated][: len(history(reference_run))] == [h[0] for h in history(reference_run)]
    assert {e.candidate.generation for e in evaluated} == {0, 1, 2, 3}


def test_the_timeout_follows_the_seed_when_not_given(reference_run):
    with RunStore.reader(reference_run) as store:
        seed_seconds = store.results()["g000-000"].wall_seconds
        assert store.get("timeout_s") == max(60.0, 5 * seed_seconds)


def test_a_time_fair_run_gives_candidates_exactly_the_time_factor_times_the_seeds_time(tiny_spec, tmp_path):
    fair = replace(settings(tiny_spec, generations=0), time_factor=1.5)
    assert derived_timeout(fair, 2.0) == 3.0, "no floor: the factor is the user's"
    assert derived_timeout(replace(fair, time_factor=None), 2.0) == 60.0, "token-fair: the timeout only catches hangs"
    run(fair, tmp_path)
    with RunStore.reader(tmp_path) as store:
        assert store.get("timeout_s") == 1.5 * store.results()["g000-000"].wall_seconds


def test_status_and_best_report_the_run(reference_run):
    status = subprocess.run([sys.executable, "-m", "evocode", "status", str(reference_run)], capture_output=True, text=True)
    assert status.returncode == 0
    assert "evaluations:      8 of 8 planned" in status.stdout and "hall of fame:" in status.stdout
    assert "\nstate:            finished\n" in status.stdout
    best = subprocess.run([sys.executable, "-m", "evocode", "best", str(reference_run)], capture_output=True, text=True)
    assert best.returncode == 0
    assert best.stdout.startswith("# g") and "val_bpb" in best.stdout


def test_a_seed_that_does_not_evaluate_stops_the_run_with_a_one_line_reason(tmp_path):
    seed = tmp_path / "broken_seed.py"
    seed.write_text("raise RuntimeError('no data here')\n")
    done = subprocess.run([sys.executable, "-m", "evocode", "evolve", str(seed), *TINY, "--run-dir", str(tmp_path / "run"),
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "evocode: the seed script broken_seed.py does not evaluate (crash: RuntimeError: no data here); "
        "fix it until `python -m evocode eval broken_seed.py` prints status: ok"
    )
    assert history(tmp_path / "run")[0][2] == "crash", "the seed's evaluation was not kept"


def test_a_seed_that_does_not_parse_is_refused_before_anything_runs(tmp_path):
    seed = tmp_path / "typo.py"
    seed.write_text("def main(:\n")
    done = subprocess.run([sys.executable, "-m", "evocode", "evolve", str(seed), "--run-dir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"evocode: {seed} does not parse (invalid syntax, line 1); fix the script first"
    assert not (tmp_path / "run").exists()


def test_resume_rebuilds_a_cleared_corpus_cache_and_the_run_directory_files(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("EVOCODE_CACHE", str(tmp_path / "cache"))
    spec = replace(tiny_spec, corpus_dir=str(prepare_corpus().directory))
    run_dir = tmp_path / "run"
    run(settings(spec, generations=0), run_dir)
    shutil.rmtree(tmp_path / "cache")
    (run_dir / "results.tsv").unlink()
    (run_dir / "candidates" / "g000-000.py").unlink()

    resumed = stored_settings(run_dir)
    assert Path(resumed.spec.corpus_dir, "meta.json").is_file(), "the corpus was not rebuilt"
    evaluated = run(replace(resumed, config=replace(resumed.config, generations=1)), run_dir)
    assert {e.candidate.generation for e in evaluated} == {0, 1}
    assert (run_dir / "candidates" / "g000-000.py").read_text() == SEED_SCRIPT.read_text()
    assert len((run_dir / "results.tsv").read_text().splitlines()) == 1 + len(evaluated)


def test_before_any_cost_is_known_the_children_that_moved_the_most_constants_start_first(tiny_spec, tmp_path, monkeypatch):
    """A phase waits for its slowest evaluation. In the first generation every child is expected to take the seed's
    time; a model child moves most constants at once, so its time is the least certain, and it starts first."""
    phases = record_phases(monkeypatch)
    config = EvolveConfig(population=6, generations=0, workers=2, seed=1, model=0.5, seeds=1)
    evaluated = evolve(RunSettings(SEED_SCRIPT.read_text(), "train.py", config, tiny_spec, Limits(threads=THREADS)),
                       tmp_path, load_mutators())
    origin = {e.candidate.id: e.candidate.origin for e in evaluated}
    children = next(keys for keys in phases if any(k != "g000-000" for k in keys))
    origins = [origin[k] for k in children]
    assert {"model", "mutation"} <= set(origins), origins
    assert origins == sorted(origins, key=lambda o: o != "model"), "model children first, then the mutants"


def test_the_next_generations_first_children_come_from_the_population_a_generation_older(reference_run):
    """Bred a generation early (EvolveConfig.early, one fewer than the 2 slots here), so that they are queued while
    the generation before them still runs; every other child comes from the generation just before."""
    with RunStore.reader(reference_run) as store:
        populations = {-1: ["g000-000"], **store.populations()}
        early = stored_settings(reference_run).config.early
        assert early == 1
        for generation in (1, 2):
            children = [c for c in store.candidates(generation) if c.origin != "human"]
            for index, child in enumerate(children):
                older = populations[generation - 2 if index < early else generation - 1]
                assert child.parents[0] in older, (child.id, child.parents, older)


def test_while_a_generations_slowest_child_runs_the_next_generations_first_child_takes_the_free_slot(tiny_spec, tmp_path):
    """The first generation holds a hand-written child that sleeps before it trains; the other slot runs the rest of
    the generation and then, without waiting for the sleeper, the first child of the next."""
    sleeper = SEED_SCRIPT.read_text().replace("\nimport torch\n", "\nimport time\n\nimport torch\n\ntime.sleep(20)\n", 1)
    assert "time.sleep(20)" in sleeper
    with RunStore(tmp_path) as store:
        queue_variant(store, "sleeper.py", sleeper)
    config = EvolveConfig(population=4, generations=1, workers=2, seed=0, seeds=1)
    run(RunSettings(SEED_SCRIPT.read_text(), "train.py", config, tiny_spec, Limits(threads=THREADS)), tmp_path)

    with RunStore.reader(tmp_path) as store:
        (slow,) = [c.id for c in store.candidates(0) if c.origin == "human"]
        finished = store.finish_times()
        generation_0_done = store.db.execute("SELECT finished FROM generations WHERE number = 0").fetchone()[0]
    assert finished["g001-000"] < finished[slow] <= generation_0_done, \
        "the next generation's first child finished while the sleeper was still running"
