"""The one execution interface: threads in process, or a dask.distributed client."""

from __future__ import annotations

import threading

import pytest

from photocalib.errors import InputError, PhotocalibError
from photocalib.execution import DaskExecutor, ThreadExecutor, as_executor


def _square_plus(x, offset=0):
    return x * x + offset


def _fail_on_three(x):
    if x == 3:
        raise RuntimeError("boom")
    return x


def test_threads_keep_input_order_and_use_several_threads():
    seen = set()

    def record(x):
        seen.add(threading.get_ident())
        return -x

    items = list(range(50))
    assert ThreadExecutor(4).map(record, items) == [-x for x in items]
    assert ThreadExecutor(1).map(_square_plus, [1, 2, 3], offset=1) == [2, 5, 10]
    assert ThreadExecutor(2).run(_square_plus, 4, offset=1) == 17
    assert ThreadExecutor(3).map(record, []) == []


def test_threads_raise_the_task_error():
    with pytest.raises(RuntimeError, match="boom"):
        ThreadExecutor(2).map(_fail_on_three, [1, 2, 3, 4])


def test_as_executor():
    ex = ThreadExecutor(2)
    assert as_executor(ex) is ex
    assert isinstance(as_executor(None), ThreadExecutor)
    with pytest.raises(InputError, match="Client"):
        as_executor(42)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_dask_map_matches_threads(client):
    ex = as_executor(client)
    assert isinstance(ex, DaskExecutor) and ex.client is client
    items = list(range(20))
    assert ex.map(_square_plus, items, offset=3) == ThreadExecutor(2).map(_square_plus, items, offset=3)
    assert ex.run(_square_plus, 5) == 25


def test_dask_map_names_the_failed_item(client):
    ex = DaskExecutor(client, retries=0)
    with pytest.raises(PhotocalibError, match=r"_fail_on_three failed for 3 .*RuntimeError: boom"):
        ex.map(_fail_on_three, [1, 2, 3, 4])


def _total(chunk, scale, shift):
    return scale * sum(chunk) + shift


def test_map_scattered_places_lost_data_again(client):
    chunks = [[1, 2], [3, 4, 5], [6]]
    per = [(10,), (100,), (1000,)]
    expected = ThreadExecutor(2).map_scattered(_total, ThreadExecutor(2).scatter(chunks), per, 1)
    assert expected == [31, 1201, 6001]
    ex = DaskExecutor(client)
    data = ex.scatter(chunks)
    assert ex.map_scattered(_total, data, per, 1) == expected
    # Losing a datum (as when its worker dies) makes its task fail; it is placed again.
    lost = data.handles[1]
    client.cancel(lost)
    assert ex.map_scattered(_total, data, per, 1) == expected
    assert data.handles[1] is not lost


_CALLS: list[int] = []


def _refuse(item):
    from photocalib.errors import InputError

    _CALLS.append(item)
    raise InputError(f"bad file {item}")


def test_dask_task_photocalib_error_is_not_retried(client):
    """A deliberate error fails the same way every time: it comes back once, as itself."""
    from photocalib.errors import InputError

    _CALLS.clear()
    ex = DaskExecutor(client, retries=3)
    with pytest.raises(InputError, match="^bad file 7") as info:
        ex.map(_refuse, [7])
    assert _CALLS == [7]  # the threads cluster shares this process: one call, no retries
    # str() is the one line the CLI prints; the worker's traceback rides along for --debug.
    assert str(info.value) == "bad file 7"
    assert "in _refuse" in "".join(getattr(info.value, "__notes__", []))


def _add(a, b):
    return a + b


def _times(x, k):
    return x * k


def test_placed_data_map_and_reduce_in_a_fixed_order(client):
    """Data built where the tasks run (``place``) are mapped over repeatedly; ``reduce_placed``
    adds the results in an order that does not depend on which task finished first, so the
    floating-point total is the same on threads and on a cluster, run after run."""
    values = [0.1 * 3**k for k in range(11)]  # sums whose rounding depends on the order
    for ex in (ThreadExecutor(3), as_executor(client)):
        placed = ex.place(_times, values, 1.0)
        assert len(placed) == 11
        assert ex.map_placed(_times, placed, 2.0) == [2.0 * v for v in values]
        totals = {ex.reduce_placed(_times, placed, _add, 1.0) for _ in range(3)}
        assert len(totals) == 1
        assert totals.pop() == pytest.approx(sum(values), rel=1e-15)
        derived = ex.place(_times, placed, 10.0)  # built from the placed data, where they are
        assert ex.map_placed(_times, derived, 1.0) == pytest.approx([10.0 * v for v in values])
        ex.release(placed)
        assert len(placed) == 0
