"""Training tokens, served and counted outside the candidate.

The candidate never holds the training split or the count of what it drew:
its harness asks for (rows, seq_len) over a pipe and the worker that started
it (the fork server warm, a thread of the runner cold) answers with that
many random windows, counting every token and refusing past the budget. The
count and any overdraw reach the runner from the worker, never from the
candidate. The pace of the draws also tells the worker early when a
candidate cannot finish within its time limit (`Ledger.projected_seconds`),
so a slot is not held to the limit by a program that will time out anyway.
The windows are a pure function of the seed and the sequence of
requests, so warm and cold runs (and a script run by hand, which keeps a
`Ledger` in its own process) draw the same batches.

Wire format: a request is two little-endian int32 (rows, seq_len); the reply
is one int32, the rows granted (0: the budget is spent, the script's pass is
over; -1: refused, the request broke the rules), then rows × (seq_len + 1)
bytes.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from collections import deque
from typing import Mapping

import numpy as np

from evocode.data import corpus_of
from evocode.spec import FEED_REPLIES_VAR, FEED_REQUESTS_VAR, SEED_VAR, EvalSpec

REQUEST = struct.Struct("<ii")
REPLY = struct.Struct("<i")
REFUSED = -1
# The pace is read over the last PACE_DRAWS draws, never the first step's (a compile, a first step's allocations):
# recent enough to leave a slow start behind, long enough to average a step's jitter.
PACE_DRAWS = 8
# A candidate is stopped early only once this share of its time limit has passed and, at its pace, it would need more
# than OVERRUN_MARGIN times the limit: the rest of its budget would have to go more than a fifth faster to make it.
# (At 1.5, a proposal that needed 1.0-1.5 times the limit held its slot to the limit, 216 s, in the default run; at a
# quarter of the limit, two proposals that needed far more held a slot 41 s and 58 s, 6% of the run's slot time.)
CHECK_AFTER_SHARE = 0.1
OVERRUN_MARGIN = 1.2


class Ledger:
    """Counts every training token served; the budget closes once it runs out."""

    def __init__(self, train: np.ndarray, budget: int, seed: int, context_length: int) -> None:
        self.train = train
        self.budget = budget
        self.context_length = context_length
        self.served = 0
        self.closed = False
        self.violations: list[str] = []
        self.rng = np.random.default_rng([seed, 0x7EA1])
        self.opened = time.monotonic()
        # (when, tokens) of the latest draws but the first: the first step runs between the first two.
        self.draws: deque[tuple[float, int]] = deque(maxlen=PACE_DRAWS + 1)

    def draw(self, rows: int, seq_len: int) -> tuple[int, bytes]:
        """The rows granted and their windows (seq_len + 1 bytes each); 0 rows closes the budget, REFUSED breaks a rule."""
        if self.closed:
            self.violations.append(f"asked for training tokens after the budget of {self.budget} was spent")
            return REFUSED, b""
        if rows < 1 or not 1 <= seq_len <= self.context_length:
            self.violations.append(f"asked for a batch of {rows} rows of {seq_len} tokens, outside what batches() allows")
            return REFUSED, b""
        rows = min(rows, (self.budget - self.served) // seq_len)
        if rows == 0:
            self.closed = True
            return 0, b""
        starts = self.rng.integers(0, len(self.train) - seq_len - 1, size=rows)
        if self.served:
            self.draws.append((time.monotonic(), rows * seq_len))
        self.served += rows * seq_len
        return rows, np.stack([self.train[s : s + seq_len + 1] for s in starts]).tobytes()

    def projected_seconds(self, limit_s: float, now: float | None = None) -> float | None:
        """The seconds the candidate would need in all, at the pace of its latest draws, when that is beyond hope:
        more than OVERRUN_MARGIN × limit_s, seen once CHECK_AFTER_SHARE of the limit has passed; None otherwise."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.opened
        draws = list(self.draws)
        if elapsed < CHECK_AFTER_SHARE * limit_s or len(draws) <= PACE_DRAWS or self.closed:
            return None
        span = draws[-1][0] - draws[0][0]
        pace = sum(tokens for _, tokens in draws[1:]) / span if span > 0 else float("inf")
        projected = elapsed + (self.budget - self.served) / pace
        return projected if projected > OVERRUN_MARGIN * limit_s else None

    def report(self) -> dict:
        """What the runner records: the tokens served and the rules broken."""
        return {"tokens": self.served, "violations": list(self.violations)}


class Feeder:
    """The serving end of the pipes: non-blocking, so a candidate that stops reading never stalls its worker."""

    def __init__(self, ledger: Ledger, requests: int, replies: int) -> None:
        self.ledger = ledger
        self.requests = requests
        self.replies = replies
        self.received = b""
        self.pending = bytearray()
        self.open = True
        os.set_blocking(replies, False)

    def readable(self) -> list[int]:
        return [self.requests] if self.open else []

    def writable(self) -> list[int]:
        return [self.replies] if self.pending else []

    def on_ready(self, readable: list[int], writable: list[int]) -> None:
        if self.requests in readable:
            chunk = os.read(self.requests, 65536)
            self.open = bool(chunk)
            self.received += chunk
            while len(self.received) >= REQUEST.size:
                rows, seq_len = REQUEST.unpack_from(self.received)
                self.received = self.received[REQUEST.size :]
                granted, windows = self.ledger.draw(rows, seq_len)
                self.pending += REPLY.pack(granted) + windows
        if self.replies in writable and self.pending:
            try:
                del self.pending[: os.write(self.replies, self.pending)]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                self.pending.clear()

    def close(self) -> None:
        for fd in (self.requests, self.replies):
            os.close(fd)


def ledger_for(env: Mapping[str, str]) -> Ledger:
    """The ledger of the candidate started with env: its corpus's training split, its budget and seed."""
    spec = EvalSpec.from_env(env)
    train = np.memmap(corpus_of(spec.corpus_dir).train_path, dtype=np.uint8, mode="r")
    return Ledger(train, spec.budget, int(env.get(SEED_VAR, "0")), spec.context_length)


def open_feed(ledger: Ledger) -> tuple[Feeder, dict[str, int]]:
    """A feeder for one candidate, and the candidate's ends of its pipes by the variable that names each."""
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    return Feeder(ledger, requests_read, replies_write), {FEED_REQUESTS_VAR: requests_write, FEED_REPLIES_VAR: replies_read}


class FeederThread:
    """A feeder served on a thread of the cold runner, until the candidate closes its end or `stop` is called."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set() and (self.feeder.open or self.feeder.pending):
            readable, writable, _ = select.select(self.feeder.readable(), self.feeder.writable(), [], 0.05)
            self.feeder.on_ready(readable, writable)

    def stop(self) -> dict:
        """Stop serving and return the ledger's report."""
        self.stopped.set()
        self.thread.join()
        self.feeder.close()
        return self.feeder.ledger.report()


class FeedClient:
    """The candidate's end: asks for batches, is told how many rows it gets."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = open(replies, "rb")
        self.lock = threading.Lock()  # one request and its reply at a time, whatever threads the script starts

    def draw(self, rows: int, seq_len: int) -> tuple[int, bytes]:
        """As Ledger.draw, answered by the runner's feeder."""
        with self.lock:
            os.write(self.requests, REQUEST.pack(rows, seq_len))
            header = self.replies.read(REPLY.size)
            if len(header) < REPLY.size:
                raise RuntimeError("the runner stopped serving training batches")
            granted = REPLY.unpack(header)[0]
            return granted, self.replies.read(granted * (seq_len + 1)) if granted > 0 else b""
