"""Evaluating candidates on a Dask cluster, through Dask's futures API (`Client.submit` + `as_completed`).

The documented layout is one single-threaded Dask worker per GPU, started
with its `CUDA_VISIBLE_DEVICES` (`dask worker ADDRESS --nthreads 1`). Each
job is one task, which runs `evaluate` on a worker as a loky worker does
locally: warm, on the worker process's own fork server (started by the
worker's one task thread, which lives as long as the worker), or cold with
`--cold`, the candidate in a sandboxed process of its own. Results are yielded as they complete, so the
loop commits each at once. Not joblib's dask backend: there one error aborts
the whole `Parallel` call and a task whose worker keeps dying hangs it.

What happens when something goes away (measured with distributed 2026.8):

- **A worker, mid-candidate** (killed, or its machine lost): the scheduler
  runs its tasks again on other workers by itself. Each attempt logs its
  start and end as scheduler events under its task's key; an attempt that
  finds two starts with no end (two workers lost under this candidate) does
  not run but returns a `crash` that names them. That is the local rule: one
  retry, then the candidate is the culprit. A scheduler that gives up first
  (its `allowed-failures` below 2) answers `KilledWorker`, which is recorded
  as the same `crash`, naming the last worker lost.
- **The driver**: the scheduler sees its connection close and releases its
  tasks; the worker marks a running task cancelled, and the evaluation's
  driver watch (asked every second) kills the candidate. A worker that loses
  its scheduler closes itself, and the watch kills its candidate too. Both
  take about a second. Nothing is recorded: `resume` runs them again.
- **The scheduler**: the client cancels its futures and the driver stops
  with `ClusterError`, one line; `resume RUNDIR --scheduler ADDRESS`
  continues once a scheduler is back (at the old address or a new one).

The corpus reaches workers that do not share the driver's disk: a worker
plugin carries its files (about 12 MB for the default corpus), and every
worker, one that joins later too, rebuilds it once in its own cache, checked
by fingerprint (`evocode.data.unpack_corpus`); tasks name it by fingerprint.
A task on a worker whose evocode or torch version is not the driver's raises
`WorkerRefused`, which stops the driver with a line naming both versions:
the scores of such a worker would not be comparable.
"""

from __future__ import annotations

import importlib.metadata
import logging
import uuid
from collections import Counter, deque
from dataclasses import replace
from typing import Iterable, Iterator

from distributed import Client, WorkerPlugin, as_completed, get_client, get_worker
from distributed.core import Status
from distributed.scheduler import KilledWorker

import evocode
from evocode.data import Corpus, corpus_files, corpus_of, shipped_directory, unpack_corpus
from evocode.evaluation.runner import EvalResult, Limits, evaluate
from evocode.executors import ClusterError
from evocode.executors.local import Job

# How long the driver waits for the scheduler to answer when it connects.
_CONNECT_S = 10
# A worker in these states still works for its scheduler: a task it runs is still wanted.
_SERVING = (Status.running, Status.paused, Status.closing_gracefully)


class WorkerRefused(ClusterError):
    """A worker runs another evocode or torch than the driver: its scores would not be comparable."""


def versions() -> dict[str, str | None]:
    """What a worker must share with the driver for its scores to count."""
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = None
    return {"evocode": evocode.__version__, "torch": torch}


def refuse_other_versions(worker: str, expected: dict[str, str | None]) -> None:
    """WorkerRefused, naming both versions, unless this process runs the versions the driver expects."""
    mine = versions()
    if mine != expected:
        def described(v: dict) -> str:
            return ", ".join(f"{name} {version}" for name, version in v.items())
        raise WorkerRefused(f"Dask worker {worker} runs {described(mine)}, the driver {described(expected)}: "
                            f"install the same versions on the workers and resume the run")


class CorpusDelivery(WorkerPlugin):
    """A run's corpus, rebuilt once on every worker, on registration or when the worker joins."""

    # The scheduler keeps the first registration under a name (which holds the fingerprint): a resumed driver sends nothing again.
    idempotent = True

    def __init__(self, corpus: Corpus) -> None:
        self.fingerprint = corpus.fingerprint
        self.files = corpus_files(corpus)

    def setup(self, worker) -> None:
        unpack_corpus(self.files, self.fingerprint)


class DaskCluster:
    """A Dask scheduler, by address or scheduler file; connected on first use, so a finished run needs no cluster.

    cold: start each candidate as a new Python process instead of forking it from the worker's fork server.
    """

    def __init__(self, address: str | None = None, scheduler_file: str | None = None, cold: bool = False) -> None:
        if (address is None) == (scheduler_file is None):
            raise ValueError("the Dask executor needs --scheduler tcp://HOST:PORT or --scheduler-file FILE (one of them)")
        self.where = address or f"the scheduler file {scheduler_file}"
        self.address, self.scheduler_file = address, scheduler_file
        self.cold = cold
        self.client: Client | None = None
        self.delivered: set[str] = set()

    def __enter__(self) -> "DaskCluster":
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()

    def evaluate_many(self, jobs: Iterable[Job], limits: Limits) -> Iterator[tuple[str, EvalResult]]:
        """Yield (job key, result) for every job, in the order they finish on the cluster.

        jobs given as a deque are drawn from after each result too, so what the caller adds to it between results
        is submitted (evocode.executors.stream); the cluster's scheduler decides the order they start in.
        """
        queue = jobs if isinstance(jobs, deque) else deque(jobs)
        if not queue:
            return
        client = self._connect()
        expected = versions()
        futures = {}
        finished = as_completed()

        def submit_queued() -> None:
            while queue:
                job = queue.popleft()
                fingerprint = self._deliver(client, corpus_of(job.spec.corpus_dir))
                key = f"evocode-{job.key.replace(' ', '-')}-{uuid.uuid4().hex[:12]}"
                future = client.submit(_evaluate_on_worker, job, fingerprint, limits, expected, self.cold, key=key, pure=False)
                futures[future] = job
                finished.add(future)

        submit_queued()
        for future in finished:
            yield futures[future].key, self._result(future, futures.pop(future))
            submit_queued()

    def _connect(self) -> Client:
        if self.client is None:
            # The driver says in one line what went wrong with the cluster; distributed's own tracebacks would bury it.
            for handler in logging.getLogger("distributed").handlers:
                handler.setLevel(logging.CRITICAL)
            try:
                self.client = Client(self.address, scheduler_file=self.scheduler_file, timeout=_CONNECT_S)
            except (OSError, ValueError) as e:  # TimeoutError is an OSError
                raise ClusterError(f"cannot reach the Dask scheduler at {self.where} ({str(e).splitlines()[0]}); start it "
                                   "(`dask scheduler`) or pass the address it prints as --scheduler") from None
        return self.client

    def _deliver(self, client: Client, corpus: Corpus) -> str:
        if corpus.fingerprint not in self.delivered:
            client.register_plugin(CorpusDelivery(corpus), name=f"evocode-corpus-{corpus.fingerprint}")
            self.delivered.add(corpus.fingerprint)
        return corpus.fingerprint

    def _result(self, future, job: Job) -> EvalResult:
        try:
            return future.result()
        except KilledWorker as e:
            return _crash(job, [e.last_worker.address])
        except WorkerRefused:
            raise
        except BaseException as e:
            if future.status != "cancelled" and self.client.status == "running":
                raise  # the runner's own fault: nothing false is recorded, and resume picks up from here
            raise ClusterError(f"lost the Dask scheduler at {self.where} ({type(e).__name__}); start it again and continue "
                               "with `python -m evocode resume RUNDIR --scheduler ADDRESS`") from None


def _crash(job: Job, lost: list[str]) -> EvalResult:
    reason = f"killed its evaluation worker: Dask worker{'s' if len(lost) > 1 else ''} {', '.join(lost)} lost under it"
    return EvalResult(status="crash", reason=reason, budget=job.spec.budget, seed=job.seed)


def _evaluate_on_worker(job: Job, fingerprint: str, limits: Limits, expected: dict[str, str | None], cold: bool) -> EvalResult:
    """The task: one evaluation on this worker, on the corpus the plugin delivered, unless two workers died under it."""
    worker = get_worker()
    key = worker.get_current_task()
    refuse_other_versions(worker.address, expected)
    topic = f"evocode-attempts-{key}"
    attempts = [message for _, message in get_client().get_events(topic)]
    lost = Counter(m["started"] for m in attempts if "started" in m) - Counter(m["ended"] for m in attempts if "ended" in m)
    if sum(lost.values()) >= 2:
        return _crash(job, sorted(lost.elements()))
    worker.log_event(topic, {"started": worker.address})
    try:
        spec = replace(job.spec, corpus_dir=str(shipped_directory(fingerprint)))
        return evaluate(job.code, spec, job.seed, limits, driver_gone=lambda: _abandoned(worker, key), warm=not cold)
    finally:
        worker.log_event(topic, {"ended": worker.address})


def _abandoned(worker, key: str) -> bool:
    """The driver released the task (it is gone, or its scheduler is), or this worker lost its scheduler."""
    task = worker.state.tasks.get(key)
    return task is None or task.state != "executing" or worker.status not in _SERVING
