"""Bad raw headers, dome flats, chromatic flats and spectrum files: InputError naming the HDU
(visit/detector), keyword, file and row."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from photocalib.errors import InputError
from photocalib.isr import ChromaticFlat, DomeFlat, isr_from_hdu, read_spectrum

GOOD = {"GAIN": 1.5, "RDNOISE": 4.0, "BIAS": 1000.0, "VISIT": 12, "DETECTOR": 3, "EXTNAME": "D3"}


@pytest.fixture()
def flat():
    return DomeFlat.from_array(np.full((48, 64), 1e4), level=1e4)


def _hdu(sip_header, data=True, **changes):
    h = sip_header.copy()
    h.update(GOOD)
    for key, value in changes.items():
        if value is None:
            del h[key]
        else:
            h[key] = value
    return fits.ImageHDU(np.full((48, 64), 1200.0, np.float32) if data else None, h)


def test_valid_raw_becomes_surface_brightness(sip_header, flat):
    exp = isr_from_hdu(_hdu(sip_header), flat)
    assert exp.kind.value == "SURFACE_BRIGHTNESS"
    # (1200 - 1000) ADU × 1.5 e-/ADU over a unit-response flat at lamp level 1e4: 300 e- / 1
    np.testing.assert_allclose(exp.image, 300.0, rtol=1e-6)


@pytest.mark.parametrize("key, value", [("GAIN", "abc"), ("SATURATE", "x"), ("GAIN", None), ("RDNOISE", "1,5")])
def test_bad_raw_keyword_names_hdu_visit_detector_and_keyword(sip_header, flat, key, value):
    with pytest.raises(InputError) as info:
        isr_from_hdu(_hdu(sip_header, **{key: value}), flat)
    message = str(info.value)
    assert key in message and "D3" in message and "VISIT=12" in message and "DETECTOR=3" in message


@pytest.mark.parametrize("key, value", [("GAIN", -1.0), ("GAIN", 0.0), ("RDNOISE", -3.0)])
def test_unphysical_raw_keyword_is_named(sip_header, flat, key, value):
    with pytest.raises(InputError, match=key):
        isr_from_hdu(_hdu(sip_header, **{key: value}), flat)


def test_raw_hdu_without_data(sip_header, flat):
    with pytest.raises(InputError, match="no image data") as info:
        isr_from_hdu(_hdu(sip_header, data=False), flat)
    assert "DETECTOR=3" in str(info.value)


def test_raw_without_wcs_names_the_hdu(flat):
    h = fits.Header(GOOD)
    with pytest.raises(InputError, match="WCS") as info:
        isr_from_hdu(fits.ImageHDU(np.ones((48, 64), np.float32), h), flat)
    assert "DETECTOR=3" in str(info.value)


def test_flat_of_another_shape(sip_header):
    with pytest.raises(InputError, match="shape"):
        isr_from_hdu(_hdu(sip_header), DomeFlat.from_array(np.full((40, 64), 1e4), level=1e4))


@pytest.mark.parametrize("flat, level, word", [
    (np.zeros((8, 8)), 1.0, "no positive finite pixel"),
    (np.full((8, 8), np.nan), 1.0, "no positive finite pixel"),
    (np.ones((8, 8)), np.nan, "level"),
    (np.ones((8, 8)), -2.0, "level"),
    (np.ones((2, 8, 8)), 1.0, "2-D"),
])
def test_unusable_dome_flat(flat, level, word):
    with pytest.raises(InputError, match=word):
        DomeFlat.from_array(flat, level=level)


def test_dome_flat_without_a_level_needs_a_wcs():
    with pytest.raises(InputError, match="LAMPLVL"):
        DomeFlat.from_array(np.ones((8, 8)))


WL = np.linspace(400.0, 600.0, 11)


@pytest.mark.parametrize("args, word", [
    ((WL, np.ones((10, 8, 8)), np.ones(11)), "shape"),
    ((WL, np.ones((11, 8, 8)), np.ones(10)), "throughput"),
    ((WL[::-1], np.ones((11, 8, 8)), np.ones(11)), "increasing"),
    ((WL, np.full((11, 8, 8), np.nan), np.ones(11)), "non-finite"),
    ((WL, np.ones((11, 8, 8)), np.zeros(11)), "zero"),
])
def test_bad_chromatic_flat(args, word):
    with pytest.raises(InputError, match=word):
        ChromaticFlat(*args)


@pytest.mark.parametrize("sed_wl, sed, word", [
    (WL, np.zeros(11), "no photons"),
    (np.linspace(800, 900, 5), np.ones(5), "band"),
    (WL, np.full(11, np.nan), "finite"),
    (WL, -np.ones(11), "non-negative"),
])
def test_bad_sed_for_flattening(sed_wl, sed, word):
    flat = ChromaticFlat(WL, np.ones((11, 8, 8)), np.ones(11))
    with pytest.raises(InputError, match=word):
        flat.flatten(sed_wl, sed)


@pytest.mark.parametrize("content, word", [
    ("", "two columns"),
    ("hello\nworld\n", "numeric"),
    ("1\n2\n3\n", "two columns"),
    ("400 1\n400 1\n600 1\n", "increasing"),
    ("# comment\n400 1\n500 nan\n600 1\n", "data row 2"),
    ("400 1\n500 -0.5\n600 1\n", "data row 2"),
    ("400 1\n500 1\n600 inf\n", "data row 3"),
])
def test_bad_spectrum_file_names_file_and_row(tmp_path, content, word):
    path = tmp_path / "sed.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=word) as info:
        read_spectrum(path)
    assert str(path) in str(info.value)


def test_missing_spectrum_file(tmp_path):
    with pytest.raises(InputError) as info:
        read_spectrum(tmp_path / "absent.sed")
    assert str(tmp_path / "absent.sed") in str(info.value)
