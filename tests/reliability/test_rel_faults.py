"""Faults while writing: an interrupted write (the writer raises midway) and a full disk
(os.replace or the write raising ENOSPC). Every writer must leave the old file intact (or no
file at all), no temporary files, and raise a clear error; the CLI makes it one line."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from photocalib import _io
from photocalib.calib import PhotoCalib
from photocalib.cli import main
from photocalib.errors import OutputError, PhotocalibError
from photocalib.fields import ChebyshevField
from photocalib.fit import write_catalog
from photocalib.geom import Box
from photocalib.image import ImageKind
from photocalib.pipeline.catalogs import write_parquet


class Interrupted(RuntimeError):
    pass


def _writers(exposure):
    """name -> (function writing a *new* object to a path, kind of bytes it writes)."""
    box = Box(0, 0, exposure.shape[1], exposure.shape[0])
    field = ChebyshevField(np.array([[1.5, 0.2], [0.1, 0.0]]), box)
    table = Table({"x": np.arange(5.0), "y": np.arange(5.0), "instflux": np.full(5, 7.0)})
    return {
        "exposure": (lambda p: exposure.replace(image=exposure.image + 1).write(p), "fits"),
        "field": (lambda p: field.write(p, overwrite=True), "fits"),
        "calib": (lambda p: PhotoCalib(field, kind=ImageKind.FLUENCE).write(p), "fits"),
        "catalog": (lambda p: write_catalog(table, p), "parquet"),
        "parquet": (lambda p: write_parquet(table.to_pandas(), p), "parquet"),
    }


WRITERS = ["exposure", "field", "calib", "catalog", "parquet"]


def _put(where, data: bytes) -> None:
    """Write bytes to a path or to the file object pandas hands to pyarrow."""
    if isinstance(where, str | os.PathLike):
        Path(where).write_bytes(data)
    else:
        where.write(data)


def _interrupt_midway(monkeypatch, kind: str, exc: BaseException) -> None:
    """Make the FITS/Parquet writer write half of its bytes, then raise ``exc``."""
    if kind == "fits":
        real = fits.HDUList.writeto

        def writeto(self, name, *args, **kwargs):
            real(self, name, *args, **kwargs)
            data = Path(name).read_bytes()
            Path(name).write_bytes(data[: len(data) // 2])
            raise exc

        monkeypatch.setattr(fits.HDUList, "writeto", writeto)
    else:
        real_pq = pq.write_table

        def write_table(table, where, *args, **kwargs):
            buffer = io.BytesIO()
            real_pq(table, buffer, *args, **kwargs)
            data = buffer.getvalue()
            _put(where, data[: len(data) // 2])
            raise exc

        monkeypatch.setattr(pq, "write_table", write_table)


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"


@pytest.mark.parametrize("exc", [Interrupted("power cut"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
@pytest.mark.parametrize("name", WRITERS)
def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch, exposure, name, exc):
    write, kind = _writers(exposure)[name]
    target = tmp_path / f"out.{kind}"
    write(target)  # the old, complete file
    before = target.read_bytes()
    _interrupt_midway(monkeypatch, kind, exc)
    with pytest.raises(type(exc)):
        write(target)
    assert target.read_bytes() == before
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("name", WRITERS)
def test_interrupted_first_write_leaves_no_file(tmp_path, monkeypatch, exposure, name):
    write, kind = _writers(exposure)[name]
    target = tmp_path / f"new.{kind}"
    _interrupt_midway(monkeypatch, kind, Interrupted("killed"))
    with pytest.raises(Interrupted):
        write(target)
    assert not target.exists()
    _no_temporaries(tmp_path)


def _full_disk(monkeypatch, where: str) -> None:
    if where == "rename":
        def replace(src, dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))

        monkeypatch.setattr(os, "replace", replace)
    else:  # the bytes themselves: the first write through a file object fails
        def writeto(self, name, *args, **kwargs):
            Path(name).write_bytes(b"SIMPLE  =                    T")
            raise OSError(errno.ENOSPC, "No space left on device")

        def write_table(table, where, *args, **kwargs):
            _put(where, b"PAR1")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fits.HDUList, "writeto", writeto)
        monkeypatch.setattr(pq, "write_table", write_table)


@pytest.mark.parametrize("where", ["rename", "write"])
@pytest.mark.parametrize("name", WRITERS)
def test_full_disk_is_a_clear_error_and_no_partial_file(tmp_path, monkeypatch, exposure, name, where):
    write, kind = _writers(exposure)[name]
    old = tmp_path / f"old.{kind}"
    write(old)
    before = old.read_bytes()
    new = tmp_path / f"new.{kind}"
    _full_disk(monkeypatch, where)
    for target in (old, new):
        with pytest.raises(OutputError) as info:
            write(target)
        err = info.value
        assert isinstance(err, OSError) and isinstance(err, PhotocalibError)
        assert err.errno == errno.ENOSPC
        assert str(target) in str(err) and "No space left on device" in str(err)
        assert "nothing was written" in str(err)
    assert old.read_bytes() == before
    assert not new.exists()
    _no_temporaries(tmp_path)


def test_unwritable_directory_is_an_output_error(tmp_path, exposure):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        exposure.write(blocker / "sub" / "out.fits")
    assert str(blocker / "sub" / "out.fits") in str(info.value)


def test_existing_file_is_kept_without_overwrite(tmp_path, exposure):
    from photocalib.errors import InputError

    target = tmp_path / "x.fits"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError, match="overwrite"):
        with _io.atomic_write(target, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"keep me"


@pytest.mark.parametrize("where", ["rename", "write"])
def test_cli_full_disk_is_one_line(tmp_path, monkeypatch, files, where):
    out = tmp_path / "fluence.fits"
    _full_disk(monkeypatch, where)
    result = CliRunner().invoke(main, ["to-fluence", str(files["exposure"]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("photocalib: error: ")
    assert "No space left on device" in err and str(out) in err
    assert not out.exists()
    _no_temporaries(tmp_path)


def test_parquet_round_trip_after_a_failed_overwrite(tmp_path, monkeypatch):
    # The old catalog still reads back to the same values after a failed overwrite.
    df = pd.DataFrame({"a": np.arange(4), "b": np.linspace(0, 1, 4)})
    target = tmp_path / "t.parquet"
    write_parquet(df, target)
    _full_disk(monkeypatch, "rename")
    with pytest.raises(OutputError):
        write_parquet(df.assign(a=df.a + 1), target)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(target), df)
