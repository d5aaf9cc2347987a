"""Bad files for every reader: missing, empty, truncated, non-FITS/non-Parquet, directories,
HDUs without data. Each must raise InputError naming the path (and the HDU where one is meant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from photocalib.calib import PhotoCalib
from photocalib.errors import InputError
from photocalib.fields import read_field
from photocalib.fit import read_catalog
from photocalib.image import Exposure
from photocalib.pipeline.catalogs import read_reference, read_table
from photocalib.pipeline.config import load_config

READERS = {
    "exposure": Exposure.read,
    "field": read_field,
    "calib": PhotoCalib.read,
    "refcat": read_reference,
    "catalog": read_catalog,
    "config": load_config,
}


def _damaged(kind: str, valid: Path, tmp: Path) -> dict[str, Path]:
    data = valid.read_bytes()
    out = {}
    for name, content in {
        "empty": b"",
        "half": data[: len(data) // 2],
        "one-block": data[:2880] if len(data) > 2880 else data[: len(data) // 3],
        "last-byte-missing": data[:-1],
        "text": b"this is a plain text file, not data\n" * 100,
        "zeros": bytes(5760),
    }.items():
        p = tmp / f"{name}{valid.suffix}"
        p.write_bytes(content)
        out[name] = p
    return out


@pytest.mark.parametrize("kind", [k for k in READERS if k != "config"])
def test_valid_file_reads(files, kind):
    assert READERS[kind](files[kind]) is not None


@pytest.mark.parametrize("kind", list(READERS))
def test_missing_file_names_the_path(tmp_path, kind):
    path = tmp_path / f"absent-{kind}.dat"
    with pytest.raises(InputError) as info:
        READERS[kind](path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", list(READERS))
def test_directory_is_not_a_file(tmp_path, kind):
    folder = tmp_path / f"folder-{kind}"
    folder.mkdir()
    with pytest.raises(InputError) as info:
        READERS[kind](folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("damage", ["empty", "half", "one-block", "last-byte-missing", "text", "zeros"])
@pytest.mark.parametrize("kind", ["exposure", "field", "calib", "refcat", "catalog"])
def test_damaged_binary_files_name_the_path(files, tmp_path, kind, damage):
    path = _damaged(kind, files[kind], tmp_path)[damage]
    with pytest.raises(InputError) as info:
        READERS[kind](path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value).strip() or len(str(info.value)) < 2000


@pytest.mark.parametrize("damage", ["half", "text", "zeros"])
def test_damaged_config_names_the_path(files, tmp_path, damage):
    path = _damaged("config", files["config"], tmp_path)[damage]
    with pytest.raises(InputError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_config_is_the_defaults(tmp_path):
    # An empty TOML document is valid TOML with no keys: every value keeps its default.
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_config(path) == load_config(None)


def test_truncated_exposure_says_truncated(files, tmp_path):
    data = files["exposure"].read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(data[: len(data) - 2880])
    with pytest.raises(InputError, match="truncat") as info:
        Exposure.read(path)
    assert str(path) in str(info.value)


def test_read_table_of_a_fits_image_is_input_error(files):
    # A FITS image is not a table: the generic table reader must say so.
    with pytest.raises(InputError) as info:
        read_table(files["exposure"])
    assert str(files["exposure"]) in str(info.value)


class TestHduWithoutData:
    def test_header_only_file(self, tmp_path, sip_header):
        path = tmp_path / "header-only.fits"
        fits.PrimaryHDU(header=sip_header).writeto(path)
        with pytest.raises(InputError, match="no HDU holds image data") as info:
            Exposure.read(path)
        assert str(path) in str(info.value)

    def test_named_extension_without_data(self, tmp_path, sip_header):
        path = tmp_path / "empty-ext.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(header=sip_header, name="SCI")]).writeto(path)
        with pytest.raises(InputError, match="has no data") as info:
            Exposure.read(path, hdu="SCI")
        assert f"{path}[SCI]" in str(info.value)
        with pytest.raises(InputError, match=r"\[1\]"):
            Exposure.read(path, hdu=1)

    @pytest.mark.parametrize("hdu", [7, "NOPE"])
    def test_absent_hdu_is_named(self, files, hdu):
        with pytest.raises(InputError) as info:
            Exposure.read(files["exposure"], hdu=hdu)
        assert repr(hdu) in str(info.value) and str(files["exposure"]) in str(info.value)

    @pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
    def test_image_not_2d(self, tmp_path, sip_header, shape):
        path = tmp_path / "cube.fits"
        fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(path)
        with pytest.raises(InputError, match="2-D") as info:
            Exposure.read(path)
        assert str(path) in str(info.value)

    def test_field_file_without_its_table(self, tmp_path, files):
        path = tmp_path / "only-primary.fits"
        fits.PrimaryHDU(np.zeros((4, 4))).writeto(path)
        with pytest.raises(InputError) as info:
            read_field(path)
        assert str(path) in str(info.value)
        with pytest.raises(InputError) as info:
            PhotoCalib.read(path)
        assert str(path) in str(info.value)

    def test_calib_read_from_a_field_file(self, files):
        # A field file has a table, but not a PHOTOCAL one: the error names the HDU sought.
        with pytest.raises(InputError, match="PHOTOCAL") as info:
            PhotoCalib.read(files["field"])
        assert str(files["field"]) in str(info.value)
