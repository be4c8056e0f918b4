"""Executors run many evaluations at once and yield (candidate id, record) as each finishes.

`local` runs them on this machine's slots (loky worker processes), `dask` on
a Dask cluster; the loop sees only `evaluate_many(jobs, limits)`, chosen
once per run from its settings by `open_executor`.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from evocode.evaluation.runner import EvalResult, Limits
from evocode.executors.local import Job, evaluate_many

if TYPE_CHECKING:
    from evocode.settings import EvolveConfig

EXECUTORS = ("local", "dask")


class ClusterError(RuntimeError):
    """The cluster cannot evaluate for this run: its scheduler is unreachable or gone, or a worker was refused."""


EvaluateMany = Callable[[Iterable[Job], Limits], Iterator[tuple[str, EvalResult]]]


@contextlib.contextmanager
def open_executor(config: "EvolveConfig") -> Iterator[EvaluateMany]:
    """The run's `evaluate_many`; a cluster's connection is closed when the run is done with it."""
    if config.executor == "local":
        yield partial(evaluate_many, slots=config.slots)
        return
    try:
        from evocode.executors.dask import DaskCluster  # an optional dependency: `pip install -e '.[dask]'`
    except ImportError as e:
        raise ValueError(f"--executor dask needs Dask's distributed package ({e}); install it with "
                         "`pip install 'dask[distributed]'` or `pip install -e '.[dask]'`") from None
    with DaskCluster(config.scheduler, config.scheduler_file, config.cold) as cluster:
        yield cluster.evaluate_many
