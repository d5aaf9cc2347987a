"""Running the pipeline's per-detector tasks on Dask, with retries and a progress bar.

The work itself goes through :mod:`photocalib.execution`; this module opens the cluster.

A LocalCluster is started by default; given a scheduler address, an existing
``dask.distributed`` cluster is used and left running.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import InputError
from ..execution import DaskExecutor, ThreadExecutor
from ..execution import Executor as BaseExecutor
from .config import DaskConfig

__all__ = ["Executor", "open_executor"]

log = logging.getLogger("photocalib.pipeline")


class Executor:
    """The pipeline's view of a :class:`photocalib.execution.Executor`: a step name per map and
    the run's progress setting.

    Parameters
    ----------
    client : distributed.Client or None
        Where tasks run; ``None`` runs them in this process, one after another.
    retries : int
        How many times Dask retries a task that raised or whose worker died.
    progress : bool
        Show a tqdm progress bar per step (on stderr).
    """

    def __init__(self, client: Any | None, retries: int = 3, progress: bool = True) -> None:
        self.client = client
        self.retries = int(retries)
        self.progress = bool(progress)
        self.executor: BaseExecutor = (ThreadExecutor(1) if client is None
                                       else DaskExecutor(client, retries=self.retries))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], desc: str,
            *args: Any, **kwargs: Any) -> list[Any]:
        """``[fn(item, *args, **kwargs) for item in items]``, in parallel, in the input order.

        Raises
        ------
        PhotocalibError
            Re-raised from the first task that failed for good (after its retries), with the
            item named in the message.
        """
        return self.executor.map(fn, items, *args, desc=desc, progress=self.progress, **kwargs)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one function (a reduce step) on the cluster with retries, or in process."""
        return self.executor.run(fn, *args, **kwargs)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this block (only possible, and only done, in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def open_executor(config: DaskConfig, scheduler: str | None = None,
                  in_process: bool = False, connect_timeout: str = "20s") -> Iterator[Executor]:
    """An :class:`Executor` on a LocalCluster, an existing scheduler, or in process.

    Parameters
    ----------
    config : DaskConfig
        Workers, threads, memory limit and retries for a LocalCluster.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); overrides ``config.scheduler``.
    in_process : bool
        Run every task in this process (no Dask at all): for debugging and tiny runs.
    connect_timeout : str
        How long to try reaching ``scheduler``.

    Raises
    ------
    InputError
        If the scheduler cannot be reached.
    """
    address = scheduler or config.scheduler
    if in_process:
        yield Executor(None, config.retries, config.progress)
        return
    import dask
    from distributed import Client, LocalCluster

    # Workers inherit nothing from our logging; keep their chatter off the user's terminal.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with dask.config.set({"distributed.worker.daemon": False,
                          "distributed.scheduler.allowed-failures": max(3, config.retries)}):
        if address:
            try:
                client = Client(address, timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                # ValueError/TypeError: a malformed address, e.g. 'tcp://host' without a port.
                raise InputError(
                    f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}: "
                    f"{exc}); give it as tcp://HOST:PORT (started with `dask scheduler`), or "
                    "leave out --scheduler to use a local cluster"
                ) from exc
            with client:
                log.info("using the Dask scheduler at %s", address)
                yield Executor(client, config.retries, config.progress)
            return
        # Worker processes started while SIGINT is ignored keep ignoring it (Python installs
        # its KeyboardInterrupt handler only where SIGINT is not ignored): Ctrl-C then reaches
        # this process alone, which stops the cluster, instead of every worker printing its
        # traceback.
        with _sigint_ignored():
            cluster = LocalCluster(n_workers=config.n_workers,
                                   threads_per_worker=config.threads_per_worker,
                                   memory_limit=config.memory_limit, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                log.info("started a local Dask cluster with %d workers", config.n_workers)
                yield Executor(client, config.retries, config.progress)
        finally:
            cluster.close()
