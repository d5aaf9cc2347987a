"""Run layout and manifests: a finished unit is recognised, a damaged one is redone."""

from __future__ import annotations

import pytest

from photocalib.pipeline.config import DaskConfig
from photocalib.pipeline.execution import Executor, open_executor
from photocalib.pipeline.layout import RunLayout, sha256_file


def test_manifest_marks_and_verifies(tmp_path):
    run = RunLayout(tmp_path)
    out = run.catalog(3, 7)
    out.parent.mkdir(parents=True)
    out.write_bytes(b"abcdef")
    assert not run.is_done("process", "v3d7")
    run.mark_done("process", "v3d7", [out], info={"n": 5})
    assert run.is_done("process", "v3d7")
    assert run.done_info("process", "v3d7") == {"n": 5}
    out.write_bytes(b"abcdeX")  # same size, different content
    assert run.is_done("process", "v3d7", verify=False)
    assert not run.is_done("process", "v3d7")
    out.write_bytes(b"abc")  # truncated
    assert not run.is_done("process", "v3d7", verify=False)
    out.unlink()
    assert not run.is_done("process", "v3d7", verify=False)
    run.clear("process")
    assert not run.manifest("process", "v3d7").exists()


def test_corrupt_manifest_means_not_done(tmp_path):
    run = RunLayout(tmp_path)
    path = run.manifest("joint", "all")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert not run.is_done("joint", "all")


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest()


def _square(x, offset=0):
    return x * x + offset


def _fail(x):
    from photocalib.errors import InputError

    raise InputError(f"bad item {x}")


def test_executor_in_process_keeps_order():
    ex = Executor(None, progress=False)
    assert ex.map(_square, [3, 1, 2], "sq", offset=1) == [10, 2, 5]
    assert ex.map(_square, [], "sq") == []


def test_executor_on_local_cluster(tmp_path):
    cfg = DaskConfig(n_workers=1, memory_limit="1GiB", progress=False, retries=1)
    with open_executor(cfg) as ex:
        assert ex.map(_square, list(range(6)), "sq") == [x * x for x in range(6)]
        assert ex.run(_square, 4, offset=1) == 17
        from photocalib.errors import InputError

        with pytest.raises(InputError, match="bad item 2"):
            ex.map(_fail, [2], "fail")


def test_unreachable_scheduler_is_input_error():
    from photocalib.errors import InputError

    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        with open_executor(DaskConfig(progress=False), scheduler="tcp://127.0.0.1:1",
                           connect_timeout="1s"):
            pass
