"""Noise-aware fitness: the elite are re-evaluated on further seeds, fitness is their mean, and resume stays exact."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import SEED_SCRIPT, evolve_killed_after, finish_times, record_phases, resume_redoing_nothing
from evocode.evaluation.runner import EvalResult, Limits
from evocode.evolve import elite_round, evolve
from evocode.genome import Genome
from evocode.mutation import load_mutators
from evocode.search.noise import Fitness, baseline_seeds, beats, extra_seed, fitness, next_round
from evocode.settings import EvolveConfig, RunSettings
from evocode.store import Candidate, Evaluated, Reevaluation, RunStore

THREADS = max(1, (os.cpu_count() or 1) // 2)
TINY = ["--budget", "4096", "--eval-tokens", "1024", "--population", "4", "--generations", "1", "--workers", "2",
        "--device", "cpu", "--seeds", "3", "--timeout", "120", "--seed", "0", "--no-progress"]


def noisy_settings(spec) -> RunSettings:
    """What TINY gives on the command line, for runs made in this process."""
    config = EvolveConfig(population=4, generations=1, elite=2, workers=2, seed=0, seeds=3)
    return RunSettings(SEED_SCRIPT.read_text(), "train.py", config, spec, Limits(timeout_s=120, threads=THREADS), auto_timeout=False)


def state(run_dir: Path) -> list[tuple]:
    """Everything a run measured: each candidate, its first result and its re-evaluations (seed, status, score)."""
    with RunStore.reader(run_dir) as store:
        return [
            (e.candidate.id, e.candidate.code_hash, [(r.seed, r.status, r.val_bpb) for r in (e.result, *e.reevaluations)])
            for e in store.evaluated()
        ]


@pytest.fixture(scope="module")
def noisy_run(tiny_spec, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("noisy")
    evolve(noisy_settings(tiny_spec), run_dir, load_mutators())
    return run_dir


def test_the_runs_two_best_are_trained_on_as_many_seeds_as_allowed_each_a_different_one(noisy_run):
    with RunStore.reader(noisy_run) as store:
        evaluated = [e for e in store.evaluated() if e.result.status == "ok"]
    elite = sorted(evaluated, key=lambda e: fitness(e).mean)[:2]
    for e in elite:
        seeds = [r.seed for r in (e.result, *e.reevaluations)]
        assert seeds == [0, extra_seed(0, 1), extra_seed(0, 2)]
        assert fitness(e).n == 3 and fitness(e).sigma is not None


def test_candidates_outside_the_elite_keep_their_one_evaluation(noisy_run):
    with RunStore.reader(noisy_run) as store:
        evaluated = store.evaluated()
    assert any(not e.reevaluations for e in evaluated)
    assert all(e.result.seed == 0 for e in evaluated), "the first evaluation of every candidate is on the run seed"


def test_results_tsv_and_status_show_the_mean_with_its_seeds_and_sigma_and_the_compute_it_took(noisy_run):
    header, *rows = [line.split("\t") for line in (noisy_run / "results.tsv").read_text().splitlines()]
    column = {name: header.index(name) for name in ("commit", "val_bpb", "status", "seeds", "sigma", "train_seconds", "params")}
    with RunStore.reader(noisy_run) as store:
        evaluated = {e.candidate.id: e for e in store.evaluated()}
    for row in rows:
        e = evaluated[row[column["commit"]]]
        if row[column["status"]] in ("keep", "discard"):
            assert float(row[column["val_bpb"]]) == pytest.approx(fitness(e).mean, abs=1e-6)
            assert int(row[column["seeds"]]) == fitness(e).n
            assert int(row[column["params"]]) == e.result.num_params > 0 and float(row[column["train_seconds"]]) > 0
    status = subprocess.run([sys.executable, "-m", "evocode", "status", str(noisy_run)], capture_output=True, text=True)
    assert status.returncode == 0
    best_line = next(line for line in status.stdout.splitlines() if line.startswith("best val_bpb:"))
    assert " ± " in best_line and "(n=3)" in best_line and " parameters, " in best_line
    tokens = sum(r.tokens for e in evaluated.values() for r in (e.result, *e.reevaluations))
    assert f"compute:          {tokens:,} training tokens, " in status.stdout


def test_a_run_killed_during_reevaluation_resumes_to_the_same_end_as_an_uninterrupted_one_redoing_nothing(noisy_run, tmp_path):
    run_dir = tmp_path / "killed"
    before = evolve_killed_after(TINY, run_dir, " seed ")
    assert any(" seed " in key for key in before), "the kill did not land after a re-evaluation"
    assert len(before) < len(finish_times(noisy_run)), "the kill did not land mid-run"

    resume_redoing_nothing(run_dir, before)
    assert state(run_dir) == state(noisy_run)


def test_between_generations_the_elite_are_reevaluated_beside_the_next_children_not_in_a_phase_of_their_own(
        tiny_spec, tmp_path, monkeypatch):
    """A phase (one call of the executor) waits for its slowest evaluation; a round of re-evaluations on its own
    would leave slots idle once per round. Only the last generation's rounds, which settle the run's best, run alone."""
    phases = record_phases(monkeypatch)
    evolve(noisy_settings(tiny_spec), tmp_path, load_mutators())

    def is_reevaluation(key: str) -> bool:
        return " seed " in key

    last_children = max(i for i, keys in enumerate(phases) if any(k.startswith("g001-") and not is_reevaluation(k) for k in keys))
    assert any(is_reevaluation(k) and k.startswith("g000-") and not k.startswith("g000-000") for k in phases[last_children]), \
        "the first generation's elite were re-evaluated beside the second generation's children"
    alone = [i for i, keys in enumerate(phases[1:], 1) if all(map(is_reevaluation, keys))]
    assert alone and min(alone) > last_children, "rounds of their own come only after the last children"


FINAL_CHECK = [*TINY, "--seeds", "1", "--finalists", "3", "--population", "6"]  # the later flags win


@pytest.fixture(scope="module")
def final_check_run(tiny_spec, tmp_path_factory) -> Path:
    """What FINAL_CHECK gives on the command line: no re-evaluation during the run, a final check of the best three."""
    run_dir = tmp_path_factory.mktemp("final-check")
    settings = noisy_settings(tiny_spec)
    evolve(replace(settings, config=replace(settings.config, seeds=1, finalists=3, population=6)), run_dir, load_mutators())
    return run_dir


def test_the_final_check_gives_the_best_three_programs_ever_evaluated_a_second_seed_and_names_the_best_mean(
        final_check_run):
    with RunStore.reader(final_check_run) as store:
        evaluated = [e for e in store.evaluated() if e.result.status == "ok"]
    ranked = sorted(evaluated, key=lambda e: (fitness(e).mean, e.candidate.id))
    for e in ranked[:3]:
        assert [r.seed for r in (e.result, *e.reevaluations)] == [0, extra_seed(0, 1)], e.candidate.id
    assert all(len(e.reevaluations) <= 1 for e in evaluated), "a second seed at most: --seeds 1 asks for no more"
    checked = [e for e in evaluated if e.reevaluations]
    assert len(checked) < len(evaluated), "only the best are checked"
    header, *rows = [line.split("\t") for line in (final_check_run / "results.tsv").read_text().splitlines()]
    best_row = next(row for row in rows if row[header.index("commit")] == ranked[0].candidate.id)
    assert best_row[header.index("seeds")] == "2", "results.tsv shows the winner's mean over its two seeds"


def test_a_run_killed_during_its_final_check_resumes_to_the_same_end_redoing_nothing(final_check_run, tmp_path):
    run_dir = tmp_path / "killed"
    before = evolve_killed_after(FINAL_CHECK, run_dir, " seed ")
    assert any(" seed " in key for key in before), "the kill did not land after a check"
    resume_redoing_nothing(run_dir, before)
    assert state(run_dir) == state(final_check_run)


def _evaluated(cid: str, *scores: float) -> Evaluated:
    genome = Genome(f"X = {cid!r}\n")
    candidate = Candidate(cid, 0, "mutation", (), "[]", "", genome.code_hash, genome.code)
    first, *more = [EvalResult("ok", val_bpb=v, seed=i) for i, v in enumerate(scores)]
    return Evaluated(candidate, first, tuple(more))


def test_a_round_reevaluates_the_unsettled_elite_by_mean_on_the_next_derived_seed():
    lucky, settled, worse = _evaluated("a", 2.0), _evaluated("b", 2.5, 2.6, 2.4), _evaluated("c", 3.0)
    assert next_round([worse, settled, lucky], elite=2, seeds=3, precision=0.0, run_seed=7, budget=100) == [
        Reevaluation("a", extra_seed(7, 1), 100)
    ]
    assert next_round([settled], elite=2, seeds=3, precision=0.0, run_seed=7, budget=100) == []


def test_a_round_that_would_leave_slots_idle_gives_the_best_unsettled_their_following_seeds_too():
    lucky, second, settled = _evaluated("a", 2.0), _evaluated("b", 2.1), _evaluated("c", 2.5, 2.6, 2.4)
    pool = [settled, second, lucky]
    assert next_round(pool, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=2) == [
        Reevaluation("a", extra_seed(7, 1), 100), Reevaluation("b", extra_seed(7, 1), 100),
    ], "one seed each already fills two slots"
    assert next_round(pool, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=4) == [
        Reevaluation("a", extra_seed(7, 1), 100), Reevaluation("b", extra_seed(7, 1), 100),
        Reevaluation("a", extra_seed(7, 2), 100), Reevaluation("b", extra_seed(7, 2), 100),
    ]
    assert next_round([lucky], elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=8) == [
        Reevaluation("a", extra_seed(7, 1), 100), Reevaluation("a", extra_seed(7, 2), 100),
    ], "never past a candidate's cap of seeds"


def test_a_round_that_runs_alone_fills_its_idle_slots_with_seeds_for_the_best_below_the_elite():
    best, elite, runner_up, next_up = (_evaluated("a", 2.0, 2.1), _evaluated("b", 2.2, 2.3, 2.1), _evaluated("c", 2.4),
                                       _evaluated("d", 2.5))
    pool = [next_up, runner_up, elite, best]
    assert next_round(pool, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=2) == [
        Reevaluation("a", extra_seed(7, 2), 100)], "beside the children, a round is one job"
    assert next_round(pool, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=2, runners_up=True) == [
        Reevaluation("a", extra_seed(7, 2), 100), Reevaluation("c", extra_seed(7, 1), 100)]
    assert next_round(pool, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=4, runners_up=True) == [
        Reevaluation("a", extra_seed(7, 2), 100), Reevaluation("c", extra_seed(7, 1), 100),
        Reevaluation("d", extra_seed(7, 1), 100)], "one seed per runner-up, while there are some"
    settled = [_evaluated("a", 2.0, 2.1, 2.0), elite, runner_up]
    assert next_round(settled, elite=2, seeds=3, precision=0.0, run_seed=7, budget=100, width=2, runners_up=True) == [], \
        "once the elite are settled the rounds end, whatever the runners-up"


def test_the_baseline_runs_beside_as_many_of_its_further_seeds_as_there_are_free_slots():
    assert baseline_seeds(7, seeds=3, slots=1) == ([], [])
    assert baseline_seeds(7, seeds=3, slots=2) == ([extra_seed(7, 1)], [])
    assert baseline_seeds(7, seeds=3, slots=8) == ([extra_seed(7, 1), extra_seed(7, 2)], [])


def test_the_baseline_takes_a_further_seed_beside_the_first_mutants_when_that_fills_their_phase_up_to_the_slots():
    assert baseline_seeds(7, seeds=3, slots=2, mutants=7) == ([extra_seed(7, 1)], [extra_seed(7, 2)])
    assert baseline_seeds(7, seeds=3, slots=2, mutants=6) == ([extra_seed(7, 1)], []), "six already fill two slots"
    assert baseline_seeds(7, seeds=2, slots=2, mutants=7) == ([extra_seed(7, 1)], []), "never beyond --seeds"
    assert baseline_seeds(7, seeds=5, slots=4, mutants=5) == ([extra_seed(7, i) for i in (1, 2, 3)], [extra_seed(7, 4)])


def test_a_mean_known_to_the_precision_needs_no_more_seeds():
    close = _evaluated("a", 2.0, 2.001)
    assert next_round([close], elite=1, seeds=5, precision=0.01, run_seed=0, budget=100) == []
    assert len(next_round([close], elite=1, seeds=5, precision=0.0001, run_seed=0, budget=100)) == 1


def test_the_last_rounds_settle_the_best_program_of_the_run_even_one_that_left_the_population(tiny_spec, tmp_path):
    # "a" left the population with one lucky score; the population's elite, re-checked, turned out worse: "a" is now
    # the run's best (outputs.best_of ranks every program), so it must not stay the best on one draw.
    settings = noisy_settings(tiny_spec)
    lucky, b, c = _evaluated("a", 2.0), _evaluated("b", 2.1, 2.6, 2.5), _evaluated("c", 2.2, 2.7, 2.6)
    with RunStore(tmp_path) as store:
        store.add_candidates([e.candidate for e in (lucky, b, c)])
        for e in (lucky, b, c):
            store.add_evaluation(e.candidate.id, e.result)
            planned = [Reevaluation(e.candidate.id, r.seed, settings.spec.budget) for r in e.reevaluations]
            store.plan_reevaluations(planned)
            for p, r in zip(planned, e.reevaluations):
                store.add_reevaluation(p, r)
        assert elite_round(store, settings, ["b", "c"]) == [], "between generations only the population is settled"
        assert elite_round(store, settings, ["b", "c"], alone=True) == [
            Reevaluation("a", extra_seed(0, 1), settings.spec.budget), Reevaluation("a", extra_seed(0, 2), settings.spec.budget),
        ]


def test_a_new_best_must_beat_the_last_by_more_than_the_noise():
    incumbent = Fitness(3.0, 3, 0.1)
    assert not beats(Fitness(2.95, 1, None), incumbent, sigma=0.1)
    assert beats(Fitness(2.8, 1, None), incumbent, sigma=0.1)
    assert beats(Fitness(2.95, 1, None), incumbent, sigma=None), "before any noise is measured, lower is better"
