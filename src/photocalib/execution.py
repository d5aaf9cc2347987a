"""One way to run independent tasks: threads in this process, or a ``dask.distributed`` cluster.

The pipeline's per-detector steps, the simulator's rendering and the joint fit's map step all
go through an :class:`Executor`, so retries, fault recovery and error messages live here once.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import InputError, PhotocalibError

__all__ = ["Executor", "ThreadExecutor", "DaskExecutor", "as_executor", "Placed", "Scattered"]


class Executor:
    """Maps a function over independent work items and returns the results in input order.

    Subclasses say where the work runs: :class:`ThreadExecutor` (this process) or
    :class:`DaskExecutor` (a ``dask.distributed`` client). Everything that fans work out in
    photocalib takes one, or ``client=`` from which :func:`as_executor` makes one.

    Examples
    --------
    >>> from photocalib.execution import ThreadExecutor
    >>> ThreadExecutor(2).map(pow, [1, 2, 3], 2)
    [1, 4, 9]
    """

    #: The ``dask.distributed.Client`` the work runs on, or None in process.
    client: Any = None

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any,
            desc: str | None = None, progress: bool = False, **kwargs: Any) -> list[Any]:
        """``[fn(item, *args, **kwargs) for item in items]``, run in parallel, in input order.

        Parameters
        ----------
        fn : callable
            A function of one work item (plus the shared ``args``/``kwargs``).
        items : sequence
            The work items.
        desc : str, optional
            What the tasks do, for the progress bar and error messages.
        progress : bool
            Show a progress bar on stderr.

        Raises
        ------
        PhotocalibError
            From the first task that failed for good; a task's own PhotocalibError is raised
            unchanged, any other error is wrapped with the work item named.
        """
        items = list(items)
        if not items:
            return []
        bar = _bar(len(items), desc or getattr(fn, "__name__", "tasks"), progress)
        try:
            return self._map(fn, items, args, kwargs, bar.update)
        finally:
            bar.close()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one function (a reduce step) where the work runs; returns its result."""
        return self.map(_call, [None], fn, args, kwargs)[0]

    def scatter(self, items: Sequence[Any]) -> Scattered:
        """Place ``items`` where the tasks run, once, for several :meth:`map_scattered` calls."""
        return Scattered(list(items), list(items))

    def map_scattered(self, fn: Callable[..., Any], data: Scattered,
                      per_item: Sequence[tuple[Any, ...]] | None = None, *args: Any) -> list[Any]:
        """``[fn(data[i], *per_item[i], *args) for i]`` on data placed by :meth:`scatter`.

        On a cluster, a datum lost with a dying worker is placed again from this process's copy
        and its task rerun (``fn`` must be a pure function of its arguments).
        """
        per = list(per_item) if per_item is not None else [()] * len(data.local)
        return self._map(_apply_scattered, list(zip(data.handles, per, strict=True)),
                         (fn, args), {}, None)

    def place(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any) -> Placed:
        """Compute ``fn(item, *args)`` for each item and keep the results where the tasks run.

        Unlike :meth:`scatter`, nothing passes through this process: on a cluster each result is
        built on a worker and stays there, and Dask rebuilds one lost with its worker from its
        lineage (``fn`` must be a pure function of its arguments). ``items`` may be the
        :class:`Placed` results of an earlier call (each then feeds one task).
        """
        return Placed(self.map(fn, _local(items), *args))

    def map_placed(self, fn: Callable[..., Any], placed: Placed, *args: Any) -> list[Any]:
        """``[fn(datum, *args) for datum in placed]`` run where the data are, in input order."""
        return self.map(fn, placed.handles, *args)

    def reduce_placed(self, fn: Callable[..., Any], placed: Placed, combine: Callable[[Any, Any], Any],
                      *args: Any) -> Any:
        """``combine`` over ``[fn(datum, *args) for datum in placed]`` in a fixed order.

        The order of the additions does not depend on which task finished first, so the
        result is the same on every run (floating-point sums included). In process at most a
        few results are alive at a time; on a cluster the partial results are combined on the
        workers (a binary tree) and only the total comes back.
        """
        acc: list[tuple[int, Any]] = []  # a binary counter: (size, partial sum)
        for value in self.map(fn, placed.handles, *args):
            size = 1
            while acc and acc[-1][0] == size:
                value = combine(acc.pop()[1], value)
                size *= 2
            acc.append((size, value))
        if not acc:
            raise InputError("reduce_placed over no data")
        total = acc.pop()[1]
        while acc:
            total = combine(acc.pop()[1], total)
        return total

    def release(self, placed: Placed) -> None:
        """Forget data kept by :meth:`place` (on a cluster the workers free them)."""
        placed.handles = []

    def _map(self, fn, items, args, kwargs, update) -> list[Any]:
        raise NotImplementedError


def _local(items: Any) -> list[Any]:
    return list(items.handles) if isinstance(items, Placed) else list(items)


class Placed:
    """Results kept where the tasks that computed them ran (:meth:`Executor.place`)."""

    def __init__(self, handles: list[Any], keep: list[Any] | None = None) -> None:
        self.handles = handles
        self.keep = keep or []

    def __len__(self) -> int:
        return len(self.handles)


def _call(_item, fn, args, kwargs):
    return fn(*args, **kwargs)


def _apply_scattered(pair, fn, args):
    datum, extra = pair
    return fn(datum, *extra, *args)


class Scattered:
    """Data placed for repeated maps: the local copies and where each one lives."""

    def __init__(self, local: list[Any], handles: list[Any]) -> None:
        self.local = local
        self.handles = handles

    def __len__(self) -> int:
        return len(self.local)


class ThreadExecutor(Executor):
    """Runs tasks on ``n_threads`` threads of this process (one: serially, in order).

    Threads suit photocalib's work: NumPy, astropy's WCS and the Numba kernels release the GIL.

    Parameters
    ----------
    n_threads : int, optional
        Default ``min(2, os.cpu_count())``.
    """

    def __init__(self, n_threads: int | None = None) -> None:
        self.n_threads = max(1, int(n_threads or min(2, os.cpu_count() or 1)))

    def _map(self, fn, items, args, kwargs, update) -> list[Any]:
        if self.n_threads == 1 or len(items) == 1:
            out = []
            for item in items:
                out.append(fn(item, *args, **kwargs))
                if update:
                    update(1)
            return out
        with ThreadPoolExecutor(max_workers=min(self.n_threads, len(items))) as pool:
            futures = [pool.submit(fn, item, *args, **kwargs) for item in items]
            try:
                out = []
                for f in futures:
                    out.append(f.result())
                    if update:
                        update(1)
                return out
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def __repr__(self) -> str:
        return f"ThreadExecutor(n_threads={self.n_threads})"


class DaskExecutor(Executor):
    """Runs tasks on a ``dask.distributed`` client, retrying a task that raised or lost its worker.

    Parameters
    ----------
    client : distributed.Client
    retries : int
        Times Dask retries a failed task before the map fails.
    """

    #: Times a datum placed by :meth:`scatter` is placed again after its worker died.
    max_rescatter = 3

    def __init__(self, client: Any, retries: int = 3) -> None:
        self.client = client
        self.retries = int(retries)

    def _map(self, fn, items, args, kwargs, update) -> list[Any]:
        from distributed import as_completed

        name = getattr(fn, "__name__", "task")
        stamp = time.monotonic_ns()
        futures = [self.client.submit(_guarded, fn, item, *args, retries=self.retries, pure=False,
                                      key=f"{name}-{_key(item)}-{stamp}-{i}", **kwargs)
                   for i, item in enumerate(items)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        try:
            for future in as_completed(futures):
                i = index[future.key]
                try:
                    results[i] = _unwrap(future.result())
                except PhotocalibError:
                    raise
                except Exception as exc:  # noqa: BLE001 - name the item whatever failed
                    raise PhotocalibError(
                        f"task {name} failed for {items[i]!r} after {self.retries} retries: "
                        f"{type(exc).__name__}: {exc}") from exc
                if update:
                    update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return results

    def scatter(self, items: Sequence[Any]) -> Scattered:
        local = list(items)
        return Scattered(local, list(self.client.scatter(local, broadcast=False)))

    def map_scattered(self, fn, data: Scattered, per_item=None, *args) -> list[Any]:
        # Scattered data has no lineage: when the worker holding a datum dies, the tasks that
        # need it fail. Place a fresh copy and rerun just those tasks; ``fn`` is pure, so the
        # result is the one an undisturbed run gives.
        from concurrent.futures import CancelledError

        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        lost_types = (CancelledError, KilledWorker, CommClosedError)
        per = list(per_item) if per_item is not None else [()] * len(data)
        results: list[Any] = [None] * len(data)
        todo = list(range(len(data)))
        last: BaseException | None = None
        for attempt in range(self.max_rescatter + 1):
            futs = {i: self.client.submit(fn, data.handles[i], *per[i], *args, pure=False)
                    for i in todo}
            lost = []
            for i, fut in futs.items():
                try:
                    results[i] = fut.result()
                except lost_types as exc:
                    lost.append(i)
                    last = exc
            if not lost:
                return results
            if attempt == self.max_rescatter:
                break
            try:
                fresh = self.client.scatter([data.local[i] for i in lost], broadcast=False)
            except (OSError, TimeoutError) as exc:
                raise PhotocalibError(
                    f"a Dask worker died and the {len(lost)} data it held could not be placed "
                    f"again ({exc}); check the cluster, or run without a client") from exc
            for i, f in zip(lost, fresh, strict=True):
                data.handles[i] = f
            todo = lost
        raise PhotocalibError(
            f"Dask workers kept dying: {len(todo)} data were lost {self.max_rescatter + 1} times "
            f"(last: {type(last).__name__}: {last}); check the workers' memory limit and logs, "
            "or run without a client")

    def place(self, fn, items, *args) -> Placed:
        name = getattr(fn, "__name__", "task")
        stamp = time.monotonic_ns()
        shared = self._share(args)
        futs = [self.client.submit(_apply_shared, fn, item, shared, pure=False, retries=self.retries,
                                   key=f"{name}-{stamp}-{i}")
                for i, item in enumerate(_local(items))]
        # the shared arguments have no lineage: hold them as long as the data, so that Dask can
        # rebuild a datum lost with its worker
        return Placed(futs, keep=[shared, *getattr(items, "keep", [])])

    def map_placed(self, fn, placed: Placed, *args) -> list[Any]:
        futs = self._submit_placed(fn, placed, args)
        try:
            return [_unwrap(f.result()) for f in futs]
        finally:
            for f in futs:
                f.release()

    def reduce_placed(self, fn, placed: Placed, combine, *args) -> Any:
        if not len(placed):
            raise InputError("reduce_placed over no data")
        level = self._submit_placed(fn, placed, args)
        stamp = time.monotonic_ns()
        depth = 0
        while len(level) > 1:
            nxt = [self.client.submit(_combine_guarded, combine, level[i], level[i + 1], pure=False,
                                      retries=self.retries, key=f"combine-{stamp}-{depth}-{i}")
                   for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
            depth += 1
        try:
            return _unwrap(level[0].result())
        finally:
            level[0].release()

    def release(self, placed: Placed) -> None:
        for f in placed.handles:
            f.release()
        placed.handles = []
        placed.keep = []

    def _share(self, args: tuple) -> Any:
        """The shared arguments of a map, sent once (to every worker) rather than with every task."""
        if not args:
            return ()
        from distributed.comm import CommClosedError

        # A worker that died a moment ago may still be on the scheduler's list, and sending it
        # the arguments fails: wait for the scheduler to notice and send again.
        for attempt in range(self.max_rescatter + 1):
            try:
                return self.client.scatter([tuple(args)], broadcast=True, hash=False)[0]
            except (CommClosedError, OSError) as exc:
                if attempt == self.max_rescatter:
                    raise PhotocalibError(f"could not send the shared arguments to the Dask workers ({exc}); "
                                          "check that the cluster is alive") from exc
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def _submit_placed(self, fn, placed: Placed, args: tuple) -> list[Any]:
        name = getattr(fn, "__name__", "task")
        stamp = time.monotonic_ns()
        shared = self._share(args)
        return [self.client.submit(_apply_shared, fn, datum, shared, pure=False, retries=self.retries,
                                   key=f"{name}-{stamp}-{i}")
                for i, datum in enumerate(placed.handles)]

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, retries={self.retries})"


class _Refused:
    """A task's PhotocalibError, returned as a value instead of raised.

    Dask retries a task that raises, and its worker logs the traceback; an error photocalib
    raises on purpose (a bad file, a bad value) fails the same way every time, so it comes
    back as a result, is not retried, and is raised again in the client as one clear line.
    """

    def __init__(self, error: PhotocalibError) -> None:
        self.error = error


def _guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except PhotocalibError as exc:
        # The worker's traceback does not travel with the exception: keep it as a note, which
        # `photocalib --debug` prints and the one-line message leaves out.
        exc.add_note("where the task raised it (on the worker):\n"
                     + "".join(traceback.format_exception(exc)).rstrip())
        return _Refused(exc)


def _apply_shared(fn: Callable[..., Any], datum: Any, shared: tuple) -> Any:
    return _guarded(fn, datum, *shared)


def _combine_guarded(combine: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if isinstance(a, _Refused):
        return a
    if isinstance(b, _Refused):
        return b
    return _guarded(combine, a, b)


def _unwrap(value: Any) -> Any:
    if isinstance(value, _Refused):
        raise value.error
    return value


def as_executor(where: Executor | Any | None = None, n_threads: int | None = None) -> Executor:
    """An Executor from what a caller gave: an Executor, a ``distributed.Client``, or None.

    Parameters
    ----------
    where : Executor, distributed.Client or None
        None gives a :class:`ThreadExecutor` with ``n_threads`` threads.
    n_threads : int, optional
        Threads for the in-process executor.

    Examples
    --------
    >>> as_executor(None, n_threads=1)
    ThreadExecutor(n_threads=1)
    """
    if isinstance(where, Executor):
        return where
    if where is None:
        return ThreadExecutor(n_threads)
    if not hasattr(where, "submit") or not hasattr(where, "scatter"):
        raise InputError(f"expected an Executor or a dask.distributed Client, got {type(where).__name__}; "
                         "pass client=None to run in this process")
    return DaskExecutor(where)


def _key(item: Any) -> str:
    """A short, key-safe name for a work item."""
    text = "-".join(str(v) for v in item) if isinstance(item, tuple) else str(item)
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="task", leave=False, dynamic_ncols=True)

