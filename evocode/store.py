"""The run store: one SQLite file that holds everything a run decided and measured.

Every candidate is written before it is evaluated and every evaluation is
committed the moment it finishes, so killing the driver loses at most the
evaluations in flight. Generations record their population once complete;
together with randomness derived from (run seed, generation) that is all a
resumed run needs to continue exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from evocode.evaluation.runner import EvalResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    origin TEXT NOT NULL,
    parents TEXT NOT NULL,
    genome TEXT NOT NULL,
    description TEXT NOT NULL,
    code_hash TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    candidate_id TEXT PRIMARY KEY REFERENCES candidates(id),
    status TEXT NOT NULL,
    val_bpb REAL,
    eval_seed INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    train_seconds REAL NOT NULL,
    wall_seconds REAL NOT NULL,
    peak_memory_mb REAL NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reevaluations (
    candidate_id TEXT NOT NULL REFERENCES candidates(id),
    eval_seed INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    planned REAL NOT NULL,
    result TEXT,
    finished REAL,
    PRIMARY KEY (candidate_id, eval_seed, budget)
);
CREATE TABLE IF NOT EXISTS rungs (
    candidate_id TEXT NOT NULL REFERENCES candidates(id),
    rung INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    planned REAL NOT NULL,
    result TEXT,
    finished REAL,
    PRIMARY KEY (candidate_id, rung)
);
CREATE TABLE IF NOT EXISTS generations (
    number INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    at REAL NOT NULL,
    generation INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class RunLocked(RuntimeError):
    """Another driver is working on this run directory."""


@dataclass(frozen=True)
class Candidate:
    id: str
    generation: int
    origin: str
    parents: tuple[str, ...]
    genome: str
    description: str
    code_hash: str
    code: str


@dataclass(frozen=True)
class Evaluated:
    """A candidate, its first evaluation (on the run's seed), and its re-evaluations on further seeds, in order."""

    candidate: Candidate
    result: EvalResult
    reevaluations: tuple[EvalResult, ...] = ()


@dataclass(frozen=True)
class Reevaluation:
    """One more evaluation of a candidate, planned (recorded) before it runs so a resumed run redoes exactly it."""

    candidate_id: str
    seed: int
    budget: int


@dataclass(frozen=True)
class RungEvaluation:
    """A child's evaluation at a rung below the full budget (evocode.search.fidelity), on the run's evaluation seed:
    planned (recorded) before its rung runs, its result None until it finishes."""

    candidate_id: str
    rung: int
    budget: int
    result: EvalResult | None = None


class RunStore:
    """The run's SQLite file, opened by at most one driver at a time."""

    def __init__(self, directory: Path, lock: bool = True) -> None:
        """lock=False opens the store only to read it, beside a driver that may be writing."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(directory / "evocode.lock", "a") if lock else None
        if self._lock is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RunLocked(
                    f"another evocode driver is running on {directory}; wait for it, or stop it before resuming"
                ) from None
        self.db = sqlite3.connect(directory / "evocode.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    @classmethod
    def reader(cls, directory: Path) -> "RunStore":
        return cls(directory, lock=False)

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The run's fixed facts: arguments, seed program, corpus, version.
    def get(self, key: str):
        row = self.db.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value) -> None:
        self.put_all({key: value})

    def put_all(self, values: dict) -> None:
        """Several facts at once, all or none: a run is never left with half its settings."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO run (key, value) VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    def add_candidates(self, candidates: list[Candidate], events: list[tuple[int, str, str]] = ()) -> None:
        """Children (all of a generation's, or the rest of them with the next one's first), and what went wrong making
        them, at once: all or none."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.id, c.generation, c.origin, json.dumps(c.parents), c.genome, c.description, c.code_hash, c.code, now)
                    for c in candidates
                ],
            )
            self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", [(now, *event) for event in events])

    def bred(self) -> set[int]:
        """The generations whose children have all been made (a generation's first few are made a generation early,
        evocode.evolve.brood): the `bred` event add_candidates records with the last of them."""
        return {row[0] for row in self.db.execute("SELECT DISTINCT generation FROM events WHERE kind = 'bred'")}

    def add_evaluation(self, candidate_id: str, result: EvalResult) -> None:
        self.db.execute(
            "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                candidate_id, result.status, result.val_bpb, result.seed, result.tokens, result.train_seconds,
                result.wall_seconds, result.peak_memory_mb, result.reason, json.dumps(result.as_dict()), time.time(),
            ),
        )

    def plan_reevaluations(self, planned: list[Reevaluation]) -> None:
        """A round of re-evaluations, all or none, before any of them runs."""
        with self.db:
            self.db.execute("BEGIN")
            self._insert_reevaluations(planned, time.time())

    def _insert_reevaluations(self, planned: list[Reevaluation], now: float) -> None:
        self.db.executemany("INSERT INTO reevaluations (candidate_id, eval_seed, budget, planned) VALUES (?, ?, ?, ?)",
                            [(r.candidate_id, r.seed, r.budget, now) for r in planned])

    def add_reevaluation(self, planned: Reevaluation, result: EvalResult) -> None:
        self.db.execute(
            "UPDATE reevaluations SET result = ?, finished = ? WHERE candidate_id = ? AND eval_seed = ? AND budget = ?",
            (json.dumps(result.as_dict()), time.time(), planned.candidate_id, planned.seed, planned.budget),
        )

    def pending_reevaluations(self) -> list[Reevaluation]:
        """Planned re-evaluations without a result, in the order they were planned."""
        rows = self.db.execute("SELECT candidate_id, eval_seed, budget FROM reevaluations WHERE result IS NULL ORDER BY rowid")
        return [Reevaluation(*row) for row in rows]

    def reevaluations(self) -> dict[str, tuple[EvalResult, ...]]:
        """Each candidate's finished re-evaluations, in the order they were planned."""
        found: dict[str, list[EvalResult]] = {}
        for cid, result in self.db.execute("SELECT candidate_id, result FROM reevaluations WHERE result IS NOT NULL ORDER BY rowid"):
            found.setdefault(cid, []).append(EvalResult.from_dict(json.loads(result)))
        return {cid: tuple(results) for cid, results in found.items()}

    def plan_rung(self, rung: int, budget: int, candidate_ids: list[str]) -> None:
        """A rung's entrants, all or none, before any of them runs."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO rungs (candidate_id, rung, budget, planned) VALUES (?, ?, ?, ?)",
                                [(cid, rung, budget, now) for cid in candidate_ids])

    def add_rung_result(self, candidate_id: str, rung: int, result: EvalResult) -> None:
        self.db.execute("UPDATE rungs SET result = ?, finished = ? WHERE candidate_id = ? AND rung = ?",
                        (json.dumps(result.as_dict()), time.time(), candidate_id, rung))

    def rungs(self) -> list[RungEvaluation]:
        """Every planned rung evaluation, finished or not, in the order they were planned."""
        rows = self.db.execute("SELECT candidate_id, rung, budget, result FROM rungs ORDER BY rowid")
        return [RungEvaluation(cid, rung, budget, None if result is None else EvalResult.from_dict(json.loads(result)))
                for cid, rung, budget, result in rows]

    def forget_evaluations(self, candidate_id: str) -> None:
        """Every evaluation of the candidate, re-evaluations included, as if it had never run."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM evaluations WHERE candidate_id = ?", (candidate_id,))
            self.db.execute("DELETE FROM reevaluations WHERE candidate_id = ?", (candidate_id,))

    def finish_generation(self, number: int, population: list[str], planned: list[Reevaluation] = ()) -> None:
        """The generation's population and the re-evaluations planned for the next one, all or none: a resumed run
        must not find the one without the other."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO generations VALUES (?, ?, ?)", (number, json.dumps(population), now))
            self._insert_reevaluations(planned, now)

    def candidates(self, generation: int | None = None) -> list[Candidate]:
        query = "SELECT id, generation, origin, parents, genome, description, code_hash, code FROM candidates"
        rows = self.db.execute(query + (" WHERE generation = ?" if generation is not None else "") + " ORDER BY id",
                               () if generation is None else (generation,))
        return [Candidate(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], r[7]) for r in rows]

    def results(self) -> dict[str, EvalResult]:
        rows = self.db.execute("SELECT candidate_id, result FROM evaluations")
        return {cid: EvalResult.from_dict(json.loads(result)) for cid, result in rows}

    def evaluated(self) -> list[Evaluated]:
        """Every evaluated candidate, in the order they were created, with its re-evaluations."""
        results, again = self.results(), self.reevaluations()
        return [Evaluated(c, results[c.id], again.get(c.id, ())) for c in self.candidates() if c.id in results]

    def code_hashes(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT code_hash FROM candidates")}

    def populations(self) -> dict[int, list[str]]:
        rows = self.db.execute("SELECT number, population FROM generations ORDER BY number")
        return {number: json.loads(population) for number, population in rows}

    def finish_times(self) -> dict[str, float]:
        """When each finished evaluation was committed: by candidate id, ``ID seed S budget B`` for re-evaluations and
        ``ID rung R budget B`` for rungs below the full budget."""
        again = self.db.execute("SELECT candidate_id || ' seed ' || eval_seed || ' budget ' || budget, finished "
                                "FROM reevaluations WHERE finished IS NOT NULL")
        rungs = self.db.execute("SELECT candidate_id || ' rung ' || rung || ' budget ' || budget, finished "
                                "FROM rungs WHERE finished IS NOT NULL")
        return {**dict(self.db.execute("SELECT candidate_id, finished FROM evaluations")), **dict(again), **dict(rungs)}

    def event_counts(self, kind: str) -> dict[str, int]:
        """How often each subject (the text before the first colon of an event's detail) had an event of this kind."""
        rows = self.db.execute(
            "SELECT substr(detail, 1, instr(detail, ':') - 1) AS subject, count(*) FROM events "
            "WHERE kind = ? GROUP BY subject ORDER BY subject", (kind,)
        )
        return dict(rows)
