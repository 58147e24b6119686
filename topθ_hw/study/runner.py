"""Evaluate a list of independent tasks on Dask, or in-process, persisting finished batches.

The tasks are split into batches (a few per worker, so the cluster stays busy and a batch is
small enough that an interruption loses little); each finished batch is handed to
``on_done`` in the client as soon as it completes, which writes it to disk. The result does
not depend on how the work ran: every task is a pure function of its inputs and the caller
orders the rows by point, not by completion.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

from tqdm import tqdm

from topθ_hw.errors import UserError

CONNECT_TIMEOUT_S = 5
BATCHES_PER_WORKER = 8
MAX_BATCH = 25


def evaluate_batch(evaluate: Callable[[dict], dict], tasks: list[dict]) -> list[dict]:
    return [evaluate(task) for task in tasks]


def batches(tasks: list[dict], n_workers: int) -> list[list[dict]]:
    size = max(1, min(MAX_BATCH, math.ceil(len(tasks) / (max(n_workers, 1) * BATCHES_PER_WORKER))))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


@contextmanager
def sigint_ignored():
    """SIGINT ignored while worker processes start (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2):
    """A Dask client: on the scheduler at ``scheduler``, on a fresh LocalCluster of ``workers``
    worker processes, or None (run in this process) when ``workers == 0`` and no scheduler."""
    if scheduler is None and workers == 0:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        # Processes, one thread each: the simulator is pure Python and holds the GIL.
        with sigint_ignored():  # the workers inherit it: Ctrl-C reaches this process alone, not 2 × 30 lines
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S) if scheduler else Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"--scheduler {scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                        f"({type(exc).__name__}); start one with `dask scheduler` or leave --scheduler out") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(tasks: list[dict], evaluate: Callable[[dict], dict], on_done: Callable[[list[dict]], None],
              client=None, progress: bool = True, desc: str = "study", unit: str = "point") -> None:
    """Run ``evaluate`` over ``tasks`` in batches, on ``client`` (Dask) or in this process when
    it is None; each finished batch goes to ``on_done`` in this process as soon as it is done."""
    bar = tqdm(total=len(tasks), unit=unit, desc=desc, disable=not progress)
    try:
        if client is None:
            for batch in batches(tasks, 1):
                on_done(evaluate_batch(evaluate, batch))
                bar.update(len(batch))
        else:
            _run_on_dask(tasks, evaluate, on_done, client, bar)
    finally:
        bar.close()


def _run_on_dask(tasks, evaluate, on_done, client, bar) -> None:
    from dask.distributed import as_completed

    n_workers = max(1, len(client.nthreads()))
    futures = [client.submit(evaluate_batch, evaluate, batch, pure=False)
               for batch in batches(tasks, n_workers)]
    for future in as_completed(futures):
        rows = future.result()
        on_done(rows)
        bar.update(len(rows))
