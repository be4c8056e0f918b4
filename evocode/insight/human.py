"""Human ideas on the edges: a hand-written variant of the seed, queued into a run's next generation.

`add` stores the variant in the run store's queue; it may do so beside a
driver that is running (SQLite serializes the two writers). Breeding takes
every queued variant whose program the run does not have yet, as a candidate
of origin `human` with the seed as its parent and, as its genome, one edit
that rewrites the whole program (PROGRAM_SITE). From then on it is a
candidate like any other: selected, crossed, mutated and credited by its
score. A variant is taken once, because taking it records its program, and
the queue is read in the order it was filled, so a resumed run breeds what
the uninterrupted one would have.
"""

from __future__ import annotations

import time

from evocode.genome import PROGRAM_SITE, Edit, Genome, code_hash
from evocode.store import RunStore

ORIGIN = "human"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS human_queue (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    code TEXT NOT NULL,
    added REAL NOT NULL
);
"""


def _queued(store: RunStore) -> list[tuple[str, str]]:
    store.db.executescript(_SCHEMA)
    return list(store.db.execute("SELECT name, code FROM human_queue ORDER BY number"))


def queue_variant(store: RunStore, name: str, code: str) -> None:
    """Queue a hand-written program; ValueError when the run has evaluated or queued the same program (by code hash)."""
    wanted = code_hash(code)
    if wanted in store.code_hashes():
        raise ValueError(f"the run already has this program ({name}); change it, or leave the run to it")
    if any(code_hash(queued) == wanted for _, queued in _queued(store)):
        raise ValueError(f"this program ({name}) is queued already; the run takes it at its next generation")
    store.db.execute("INSERT INTO human_queue (name, code, added) VALUES (?, ?, ?)", (name, code, time.time()))


def human_genomes(store: RunStore, seed_source: str, known: set[str]) -> list[Genome]:
    """The queued variants whose program is not among `known` code hashes, in the order they were queued."""
    genomes = []
    for name, code in _queued(store):
        genome = Genome(seed_source, (Edit(ORIGIN, PROGRAM_SITE, code, f"hand-written {name}"),))
        if genome.code_hash not in known | {g.code_hash for g in genomes}:
            genomes.append(genome)
    return genomes
