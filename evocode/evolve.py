"""The main job: evolve a population of programs from one seed script.

Generation 0 is the seed (the baseline, evaluated first) and mutants or
model proposals of it. Every later generation selects parents by
tournament, makes children by crossover, model proposal, stacking or
mutation, drops children whose program was already evaluated, evaluates
the rest in parallel and keeps an elite. The next generation's first few
children are bred with the current one's, from the same population, and
queued behind it in the run's one queue of evaluations, so a slot never
waits for a generation's slowest evaluation. All randomness of generation
g comes from (run seed, g), and children are recorded before any of them is
evaluated, so a resumed run makes exactly the decisions the uninterrupted
run would have made.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evocode.crossover import crossover
from evocode.evaluation.runner import EvalResult
from evocode.executors import EvaluateMany, open_executor
from evocode.executors.local import Job
from evocode.executors.stream import Stream
from evocode.genome import Genome, edits_from_json, edits_to_json
from evocode.insight.human import ORIGIN, human_genomes
from evocode.mutation import Mutator, mutate
from evocode.outputs import write_candidate, write_summary
from evocode.search.fidelity import brood_size, promoted, rung_budgets, screened_out
from evocode.search.credit import credited, mutator_weights, trials
from evocode.search.noise import baseline_seeds, next_round
from evocode.search.parzen import ORIGIN as MODEL, Model, fit, fit_cost, model_child, propose
from evocode.search.selection import Individual, next_population, tournament
from evocode.search.space import constant_space
from evocode.search.stacking import Change, helpful_changes, stack
from evocode.search.steps import module_numbers
from evocode.settings import EvolveConfig, RunSettings, derived_timeout, rung_timeout, start_or_continue, with_timeout
from evocode.store import Candidate, Evaluated, Reevaluation, RunStore, RungEvaluation

# A child that duplicates a known program is redrawn; this bounds the redraws per child wanted.
_ATTEMPTS_PER_CHILD = 10
# Most mutants take one step; a few take several, up to this many, to cross valleys single edits cannot.
_MAX_EDITS_PER_MUTATION = 4
SEED_ID = "g000-000"


def evolve(
    settings: RunSettings,
    run_dir: Path,
    mutators: list[Mutator],
    on_result: Callable[[Candidate, EvalResult, list[Evaluated]], None] = lambda *_: None,
) -> list[Evaluated]:
    """Run (or continue) the evolution stored in run_dir; returns every evaluated candidate."""
    with RunStore(run_dir) as store:
        settings = start_or_continue(store, settings, mutators)
        rewrite_outputs(store, settings, run_dir)
        populations = store.populations()
        population = individuals(store, populations[max(populations)]) if populations else []
        with open_executor(settings.config) as evaluate_many:
            if not populations:
                seed = brood(store, settings, mutators, population, 0)[0]
                evaluate_baseline(store, settings, seed, run_dir, on_result, evaluate_many)
            settings = with_timeout(settings, store.get("timeout_s"))
            stream = Stream(evaluate_many, settings.limits)
            for generation in range(len(populations), settings.config.generations + 1):
                candidates = brood(store, settings, mutators, population, generation)
                finalists = screen(store, settings, [c for c in candidates if c.origin != "seed"], run_dir, evaluate_many)
                # The elite's re-evaluations planned when the last generation finished run beside its children.
                waited = queue_jobs(stream, store, settings, generation, finalists, store.pending_reevaluations(),
                                    run_dir, on_result)
                # The next generation's first children, bred already, fill the slots this one's slowest leaves idle.
                queue_jobs(stream, store, settings, generation + 1, store.candidates(generation + 1), [], run_dir, on_result)
                stream.wait_for(waited)
                population = next_population(individuals(store, [ind.id for ind in population]),
                                             individuals(store, [c.id for c in candidates]), settings.config.elite)
                ids = [ind.id for ind in population]
                if generation == settings.config.generations:
                    population = reevaluate_elite(store, settings, ids, run_dir, stream)
                    store.finish_generation(generation, ids)
                else:
                    store.finish_generation(generation, ids, elite_round(store, settings, ids))
        return store.evaluated()


def rewrite_outputs(store: RunStore, settings: RunSettings, run_dir: Path) -> None:
    """A driver killed between committing a result and writing its files left them stale; the store is the truth."""
    evaluated = store.evaluated()
    for e in evaluated + screened_out(store.candidates(), evaluated, store.rungs()):
        write_candidate(run_dir, e)
    summarize(store, settings, run_dir)


def evaluate_baseline(store: RunStore, settings: RunSettings, seed: Candidate, run_dir: Path, on_result,
                      evaluate_many: EvaluateMany) -> None:
    """The seed first, beside only its own further seeds: a run has no meaning without its baseline, and the seed's
    time sets the timeout. Its seeds planned to fill the first generation's phase run there (evocode.search.noise)."""
    previous = store.results().get(seed.id)
    if previous is not None and previous.status != "ok":
        store.forget_evaluations(seed.id)  # a failed baseline may have been the machine's fault: try it again
    config = settings.config
    alone, beside = baseline_seeds(config.seed, config.seeds, config.slots.count,
                                   config.population - 1 if config.rungs == 1 else 0)
    if seed.id not in store.results() and seed.id not in store.reevaluations():
        # Those beside the mutants stay pending until the first generation's children run.
        store.plan_reevaluations([Reevaluation(seed.id, s, settings.spec.budget) for s in alone + beside])
    extras = [r for r in store.pending_reevaluations() if r.candidate_id == seed.id and r.seed in alone]
    stream = Stream(evaluate_many, settings.limits)
    stream.wait_for(queue_jobs(stream, store, settings, 0, [seed], extras, run_dir, on_result))
    result = store.results()[seed.id]
    if result.status != "ok":
        raise SeedFailed(
            f"the seed script {settings.seed_name} does not evaluate ({result.status}: {result.reason}); "
            f"fix it until `python -m evocode eval {settings.seed_name}` prints status: ok"
        )
    if store.get("timeout_s") is None:
        store.put("timeout_s", derived_timeout(settings, result.wall_seconds))


class SeedFailed(RuntimeError):
    """The seed script itself does not train and score: there is no baseline to improve on."""


def individuals(store: RunStore, ids: Sequence[str]) -> list[Individual]:
    by_id = {e.candidate.id: e for e in store.evaluated()}
    return [Individual(by_id[i]) for i in ids if i in by_id]


def brood(store: RunStore, settings: RunSettings, mutators: list[Mutator], population: list[Individual],
          generation: int) -> list[Candidate]:
    """The generation's candidates. Unless it was bred already, its children not made yet are bred now, with the
    next generation's first `early` children (EvolveConfig.early), from the same population and recorded with
    them at once, before any is evaluated.

    The next generation's first children are bred a generation early so that
    they are known while this generation's slowest evaluations run, and fill
    the slots those would leave idle (evocode.executors.stream). What breeds
    them is what a replay or a resumed run has too: the population and the
    evaluations of the generations before this one, not whichever early
    children happen to have finished.
    """
    if generation not in _bred(store):
        config = settings.config
        evaluated = [e for e in store.evaluated() if e.candidate.generation < generation]
        known = store.code_hashes()
        recorded = store.candidates(generation)
        children = config.population - 1 if generation == 0 else config.population - config.elite
        target = (1 if generation == 0 else 0) + brood_size(children, config.rungs, config.eta)
        events: list[tuple[int, str, str]] = []
        # The time limit as the run's evaluations have it: the derived one once the seed has set it, also on resume.
        limit_s = with_timeout(settings, store.get("timeout_s")).limits.timeout_s
        rng = np.random.default_rng([config.seed, generation])
        made = breed(settings, mutators, population, generation, evaluated, limit_s, known, events, recorded, target, rng,
                     hand_written=human_genomes(store, settings.seed_source, known))
        if generation < config.generations:
            early = np.random.default_rng([config.seed, generation + 1, 1])
            made += breed(settings, mutators, population, generation + 1, evaluated, limit_s, known, events,
                          store.candidates(generation + 1), config.early, early)
        store.add_candidates(made, events + [(generation, "bred", f"g{generation:03d}: {len(recorded)} bred before, "
                                                                  f"{len(made)} now (the next generation's first included)")])
    return store.candidates(generation)


def _bred(store: RunStore) -> set[int]:
    """Generations bred in full; a store from before the `bred` record has every generation it holds bred in full."""
    return store.bred() or {c.generation for c in store.candidates()}


def breed(settings: RunSettings, mutators: list[Mutator], population: list[Individual], generation: int,
          evaluated: list[Evaluated], limit_s: float | None, known: set[str], events: list[tuple[int, str, str]],
          recorded: list[Candidate], target: int, rng: np.random.Generator,
          hand_written: Sequence[Genome] = ()) -> list[Candidate]:
    """Children of the population for the generation, numbered after its recorded ones, up to target in all: the
    seed and mutants or model proposals of it while the population is empty, tournament winners' offspring after.
    What breeds them is the evaluated programs and the time limit limit_s; a child that duplicates a known program
    (by code hash) is redrawn, and each one made joins known."""
    config = settings.config
    seed = Genome(settings.seed_source)
    mutators, draw = credit_policy(evaluated, config, mutators)
    changes = helpful_changes(evaluated) if config.stack else []
    model = fit(constant_space(settings.seed_source, settings.spec.context_length), evaluated, limit_s,
                config.reach, config.cost_share) if config.model else None
    made: list[Candidate] = []

    def add(genome: Genome, origin: str, parents: tuple[str, ...], cid: str | None = None) -> None:
        known.add(genome.code_hash)
        made.append(_candidate(genome, cid or f"g{generation:03d}-{len(recorded) + len(made):03d}", generation, origin,
                               parents, "seed" if origin == "seed" else None))

    if generation == 0 and not recorded:
        add(seed, "seed", (), SEED_ID)
    for genome in hand_written:  # queued by `evocode add`: they take children's places
        if genome.code_hash not in known:
            add(genome, ORIGIN, (SEED_ID,))
    # From the seed alone, the model's share of the children is exact rather than drawn child by child: a first
    # generation of far draws only (0.7^7 at --model 0.7, one run in twelve) left a run no mutant of the seed to build
    # on, and with nothing near the seed's score to select, search seed 1 of the benchmark collapsed that way.
    quota = int(config.model * (target - (1 if generation == 0 else 0)) + 0.5) if model is not None else 0
    for _ in range(target * _ATTEMPTS_PER_CHILD):
        if len(recorded) + len(made) >= target:
            break
        if not population:
            drawn = sum(c.origin == MODEL for c in (*recorded, *made))
            proposed = model_child(seed, propose(model, rng)) if drawn < quota else None
            genome, origin = (proposed, MODEL) if proposed is not None else (_mutant(events, seed, mutators, rng, generation, draw(rng)), "mutation")
            parents = (SEED_ID,)
        else:
            genome, origin, parents = vary(events, seed, population, mutators, changes, model, config, rng, generation, draw)
        if genome.code_hash in known:
            continue
        add(genome, origin, parents)
    return made


def credit_policy(
    evaluated: list[Evaluated], config: EvolveConfig, mutators: list[Mutator],
) -> tuple[list[Mutator], Callable[[np.random.Generator], np.ndarray | None]]:
    """The mutators (choosing their sites, and sizing their numeric steps, by credit) and how each mutant weighs
    them: by the credit of every pair evaluated so far, or, when credit is off, the mutators as they are, uniformly."""
    if not config.credit:
        return mutators, lambda rng: None
    evidence = trials(evaluated)
    names = [m.name for m in mutators]
    return credited(mutators, evidence, config.adaptive_steps), lambda rng: mutator_weights(names, evidence, rng)


def vary(
    events: list[tuple[int, str, str]], seed: Genome, population: list[Individual], mutators: list[Mutator],
    changes: list[Change], model: Model | None, config: EvolveConfig, rng: np.random.Generator, generation: int,
    draw: Callable[[np.random.Generator], np.ndarray | None],
) -> tuple[Genome, str, tuple[str, ...]]:
    """One child: crossover of two tournament winners with probability cx; else, with probability model, a
    tournament winner with the constants the model proposes (evocode.search.parzen); else, with probability stack,
    one with a change that helped elsewhere (evocode.search.stacking); else a mutant of one."""
    if rng.random() < config.cx and len(population) >= 2:
        # The fitter parent goes first: crossover falls back to a copy of it.
        a, b = sorted(tournament(population, 2, config.tournament, rng), key=lambda ind: ind.fitness, reverse=True)
        child, info = crossover(_genome(seed, a), _genome(seed, b), rng)
        if info.fallback or info.dropped:
            events.append((generation, "crossover-fallback", f"{a.id} x {b.id}: {len(info.dropped)} edits dropped, fallback={info.fallback}"))
        return child, "crossover", (a.id, b.id)
    (parent,) = tournament(population, 1, config.tournament, rng)
    genome = _genome(seed, parent)
    proposed = _proposed(genome, model, config, rng)
    if proposed is not None:
        return proposed, MODEL, (parent.id,)
    if config.stack and rng.random() < config.stack:
        stacked = stack(genome, changes, rng)
        if stacked is not None:
            child, change = stacked
            return child, "stacking", (parent.id, change.donor)
    return _mutant(events, genome, mutators, rng, generation, draw(rng)), "mutation", (parent.id,)


def _proposed(parent: Genome, model: Model | None, config: EvolveConfig, rng: np.random.Generator) -> Genome | None:
    """With probability model, the parent with the model's proposed constants; None otherwise, or when the
    proposal leaves the parent as it is. Draws nothing when the option is off, so such runs replay as before it."""
    if model is None or not rng.random() < config.model:
        return None
    return model_child(parent, propose(model, rng))


def _mutant(
    events: list[tuple[int, str, str]], genome: Genome, mutators: list[Mutator], rng: np.random.Generator, generation: int,
    weights: np.ndarray | None,
) -> Genome:
    """One or more new edits: half the children take one step, a quarter two, and so on (geometric, capped)."""
    outcome = mutate(genome, mutators, rng, n_edits=min(int(rng.geometric(0.5)), _MAX_EDITS_PER_MUTATION), weights=weights)
    for failure in outcome.failures:
        events.append((generation, "mutator-failed", f"{failure.mutator}: {failure.error}"))
    return outcome.genome


def queue_jobs(
    stream: Stream, store: RunStore, settings: RunSettings, generation: int, candidates: list[Candidate],
    reevaluations: list[Reevaluation], run_dir: Path, on_result,
) -> set[str]:
    """Queue the candidates that have no result yet and the planned re-evaluations for the generation whose
    selection waits for them; returns their keys. Each result is committed as it arrives.

    Queued jobs wait by generation, and within one the longest first, as expected from the parents' times and the
    constants that changed (a re-evaluation: the candidate's own time): a generation waits for its slowest
    evaluation, and starting it early leaves the short ones to fill the last gaps. Among those expected to take as
    long (before any cost is known, every child of the first generation), the child that moved the most constants
    goes first: what it costs is the least certain.
    """
    done = store.results()
    pending = {c.id: c for c in candidates if c.id not in done}
    again = {f"{r.candidate_id} seed {r.seed}": r for r in reevaluations}
    codes = {c.id: c.code for c in store.candidates()}
    expected = _expected_seconds(store, settings, done, codes)
    seconds = {c.id: expected(c) for c in pending.values()}
    seconds |= {key: done[r.candidate_id].wall_seconds if r.candidate_id in done else 0.0 for key, r in again.items()}
    moved = {c.id: _constants_moved(c, codes) for c in pending.values()}

    def rank(key: str) -> tuple:
        return generation, -seconds[key], -moved.get(key, 0)

    def evaluation(candidate: Candidate) -> Callable[[EvalResult], None]:
        def commit(result: EvalResult) -> None:
            store.add_evaluation(candidate.id, result)
            write_candidate(run_dir, Evaluated(candidate, result))
            on_result(candidate, result, summarize(store, settings, run_dir))
        return commit

    def reevaluation(planned: Reevaluation) -> Callable[[EvalResult], None]:
        def commit(result: EvalResult) -> None:
            store.add_reevaluation(planned, result)
            summarize(store, settings, run_dir)
        return commit

    jobs = [(Job(c.id, c.code, settings.config.seed, settings.spec), rank(c.id), evaluation(c)) for c in pending.values()]
    jobs += [(Job(key, codes[r.candidate_id], r.seed, settings.spec), rank(key), reevaluation(r)) for key, r in again.items()]
    return stream.add(jobs)


def screen(store: RunStore, settings: RunSettings, children: list[Candidate], run_dir: Path,
           evaluate_many: EvaluateMany) -> list[Candidate]:
    """Successive halving below the full budget (evocode.search.fidelity): the children promoted to it.

    Each rung's entrants are recorded before it runs; a rung already recorded
    (the run was killed in it) keeps its entrants and runs only what is missing.
    """
    config = settings.config
    entrants = [c.id for c in children]
    for rung, budget in enumerate(rung_budgets(settings.spec.budget, config.rungs, config.eta)[:-1]):
        ours = set(entrants)
        planned = [r for r in store.rungs() if r.rung == rung and r.candidate_id in ours]
        if not planned:
            store.plan_rung(rung, budget, entrants)
            planned = [RungEvaluation(cid, rung, budget) for cid in entrants]
        evaluate_rung(store, settings, [r for r in planned if r.result is None], run_dir, evaluate_many)
        results = {r.candidate_id: r.result for r in store.rungs() if r.rung == rung and r.candidate_id in ours}
        entrants = promoted([r.candidate_id for r in planned], results, config.eta)
    return [c for c in children if c.id in set(entrants)]


def evaluate_rung(store: RunStore, settings: RunSettings, planned: list[RungEvaluation], run_dir: Path,
                  evaluate_many: EvaluateMany) -> None:
    """Train the planned children on their rung's budget and seed, with the timeout scaled to it; each result is
    committed as it arrives."""
    if not planned:
        return
    budget, rung = planned[0].budget, planned[0].rung
    candidates = {c.id: c for c in store.candidates()}
    spec = replace(settings.spec, budget=budget)
    limits = with_timeout(settings, rung_timeout(settings.limits.timeout_s if settings.auto_timeout else None, budget,
                                                 settings.spec.budget)).limits
    codes = {cid: c.code for cid, c in candidates.items()}
    expected = _expected_seconds(store, settings, store.results(), codes)

    def commit(candidate: Candidate) -> Callable[[EvalResult], None]:
        def record(result: EvalResult) -> None:
            store.add_rung_result(candidate.id, rung, result)
            write_candidate(run_dir, Evaluated(candidate, result))
            summarize(store, settings, run_dir)
        return record

    # The longest first, as queue_jobs orders them: rungs run one after another, so a rung's tail is idle slots.
    stream = Stream(evaluate_many, limits)
    entrants = [candidates[r.candidate_id] for r in planned]
    stream.wait_for(stream.add((Job(c.id, c.code, settings.config.seed, spec), (-expected(c), -_constants_moved(c, codes)),
                                commit(c)) for c in entrants))


def _expected_seconds(store: RunStore, settings: RunSettings, done: dict[str, EvalResult],
                      codes: dict[str, str]) -> Callable[[Candidate], float]:
    """How long a child may take: its slowest parent's time, times what the cost model of the run's programs
    (evocode.search.parzen) says its constants may cost against that parent's, one standard deviation of what it does
    not know above its prediction (0 when no parent has a time). A child whose time is uncertain is ranked as a long
    one: started late, it is what a generation would wait for (a model proposal the fit thought cheap took 197 s,
    started third, while the other slot idled 153 s)."""
    cost = fit_cost(constant_space(settings.seed_source, settings.spec.context_length), store.evaluated(),
                    settings.limits.timeout_s)

    def expected(candidate: Candidate) -> float:
        timed = [p for p in candidate.parents if p in done and p in codes]
        return max((done[p].wall_seconds * (cost.upper_ratio(candidate.code, codes[p]) if cost else 1.0) for p in timed),
                   default=0.0)

    return expected


def _constants_moved(candidate: Candidate, codes: dict[str, str]) -> int:
    """How many module-level numbers the child changed from its first parent's (all of its own, for the seed)."""
    own = module_numbers(candidate.code)
    parent = module_numbers(codes[candidate.parents[0]]) if candidate.parents and candidate.parents[0] in codes else {}
    return sum(1 for name, v in own.items() if parent.get(name) != v)


def summarize(store: RunStore, settings: RunSettings, run_dir: Path) -> list[Evaluated]:
    """results.tsv, best.py and best.diff from the store, screened-out children included; returns the evaluated."""
    evaluated = store.evaluated()
    write_summary(run_dir, settings, evaluated, screened_out(store.candidates(), evaluated, store.rungs()))
    return evaluated


def elite_round(store: RunStore, settings: RunSettings, population: list[str], alone: bool = False) -> list[Reevaluation]:
    """One more seed for each of the population's elite that is not settled yet (evocode.search.noise); a round
    that runs alone (the last generation's) settles the best of every program the run evaluated instead, and fills
    the slots it would leave idle with seeds for the runners-up.
    With --finalists, the last generation's rounds are a final check: a second seed at least for each of the best
    `finalists` programs, ranked again after each round, so the winner is the best mean of several programs rather
    than the luckiest single score among near copies of one (the winner's curse; benchmarks/RESULTS.md "Search").

    Between generations the round runs beside the next generation's children
    rather than before them: a phase of its own would leave slots idle while
    its slowest evaluation finishes, once per round. The next children are
    bred from the population's means before the round, a lag of one
    generation in what selection knows about the newest elite; the round is
    recorded with the generation's end, so a resumed run bred the same way.
    """
    config = settings.config
    elite, seeds = config.elite, config.seeds
    if alone:
        # The run's best is the best of every program it evaluated (outputs.best_of), not only of the last population:
        # a program that left the population kept its one lucky score, and it may rank first once the others are
        # re-checked, so the last rounds settle the best of them all.
        pool = store.evaluated()
        if config.finalists:
            elite, seeds = max(elite, config.finalists), max(seeds, 2)
    else:
        pool = [ind.evaluated for ind in individuals(store, population)]
    return next_round(pool, elite, seeds, config.precision, config.seed, settings.spec.budget,
                      width=config.slots.count, runners_up=alone)


def reevaluate_elite(store: RunStore, settings: RunSettings, population: list[str], run_dir: Path,
                     stream: Stream) -> list[Individual]:
    """Re-evaluate the run's best programs on further seeds until they are settled; returns the population with the
    new means.

    What the last generation does, so that the run's best is settled when it ends. A round interrupted by a kill is
    finished first on resume; every later round is planned from stored results only, so the resumed run plans the
    same ones.
    """
    while True:
        planned = store.pending_reevaluations()
        if not planned:
            planned = elite_round(store, settings, population, alone=True)
            if not planned:
                return individuals(store, population)
            store.plan_reevaluations(planned)
        generation = settings.config.generations
        stream.wait_for(queue_jobs(stream, store, settings, generation, [], planned, run_dir, lambda *_: None))


def _genome(seed: Genome, ind: Individual) -> Genome:
    """The individual's genome with its stored code: re-applying its edits one by one costs a LibCST pass each."""
    candidate = ind.evaluated.candidate
    return seed.with_edits(*edits_from_json(candidate.genome), code=candidate.code)


def _candidate(genome: Genome, cid: str, generation: int, origin: str, parents: tuple[str, ...], description: str | None) -> Candidate:
    return Candidate(
        id=cid,
        generation=generation,
        origin=origin,
        parents=parents,
        genome=edits_to_json(genome.edits),
        description=description or "; ".join(e.description for e in genome.edits),
        code_hash=genome.code_hash,
        code=genome.code,
    )
