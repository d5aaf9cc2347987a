"""Odd WCS headers: none, spectral-only, SIP of inconsistent order, NaN and infinite keywords,
singular matrices. SkyWcs.from_header and Exposure.read must raise InputError naming the keyword
(and, for files, the path and HDU)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits

from photocalib.astrometry import SkyWcs
from photocalib.errors import InputError
from photocalib.image import Exposure


def _with_raw_value(header: fits.Header, key: str, raw: str) -> fits.Header:
    """The header with ``key``'s value replaced by the raw card text ``raw`` (e.g. NaN, which
    astropy refuses to write but real archives contain)."""
    text = header.tostring()
    pattern = re.compile("(" + re.escape(f"{key:<8}") + r"= )[^/]{20}")
    assert pattern.search(text), key
    return fits.Header.fromstring(pattern.sub(lambda m: m.group(1) + f"{raw:>20}", text, count=1))


def _write_image(path, header: fits.Header, shape=(48, 64)) -> None:
    """An MEF file whose image extension CCD07 carries ``header``'s cards verbatim (even cards
    astropy cannot parse, which real archives contain)."""
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(shape, np.float32), name="CCD07")])
    for card in header.cards:
        if card.keyword not in ("NAXIS", "NAXIS1", "NAXIS2", "WCSAXES", "SIMPLE", "BITPIX", "EXTEND"):
            hdul[1].header.append(card)
    hdul.writeto(path, output_verify="ignore")


@pytest.fixture()
def sip_inverse_header(sip_header) -> fits.Header:
    """The SIP header with (small, invented) inverse AP/BP terms up to order 3."""
    h = sip_header.copy()
    h["AP_ORDER"], h["BP_ORDER"] = 3, 3
    h["AP_1_0"], h["AP_3_0"], h["AP_0_2"] = 1e-6, -2e-9, 3e-8
    h["BP_0_1"], h["BP_0_3"], h["BP_2_0"] = -1e-6, 2e-9, -3e-8
    return h


def _spectral(n: int) -> fits.Header:
    h = fits.Header()
    for i, ctype in enumerate(["WAVE", "FREQ"][:n], start=1):
        h[f"CTYPE{i}"] = ctype
        h[f"CRVAL{i}"] = 5000.0
        h[f"CDELT{i}"] = 1.0
        h[f"CRPIX{i}"] = 1.0
    return h


@pytest.mark.parametrize("n", [1, 2])
def test_spectral_only_wcs(tmp_path, n):
    with pytest.raises(InputError, match="no celestial axes") as info:
        SkyWcs.from_header(_spectral(n))
    assert "WAVE" in str(info.value)
    path = tmp_path / "spec.fits"
    _write_image(path, _spectral(n))
    with pytest.raises(InputError, match="no celestial axes") as info:
        Exposure.read(path)
    assert f"{path}[CCD07]" in str(info.value)


def test_no_wcs_keywords_at_all():
    with pytest.raises(InputError, match="no celestial axes"):
        SkyWcs.from_header(fits.Header({"NAXIS": 2, "NAXIS1": 64, "NAXIS2": 48}))


def test_image_without_wcs_reads_without_one(tmp_path):
    # No WCS keywords is not an error for reading (a raw frame); it is for anything needing areas.
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(path)
    exp = Exposure.read(path)
    assert exp.wcs is None
    with pytest.raises(InputError):
        exp.to_fluence()


@pytest.mark.parametrize("key", ["CRVAL1", "CRVAL2", "CRPIX1", "CD1_1", "CD2_2", "A_2_0", "B_0_3", "AP_1_0"])
@pytest.mark.parametrize("raw", ["NaN", "nan", "Inf", "-INF"])
def test_non_finite_keyword_is_named(tmp_path, sip_inverse_header, key, raw):
    header = _with_raw_value(sip_inverse_header, key, raw)
    with pytest.raises(InputError) as info:
        SkyWcs.from_header(header)
    assert key in str(info.value)
    path = tmp_path / "nan.fits"
    _write_image(path, header)
    with pytest.raises(InputError) as info:
        Exposure.read(path)
    message = str(info.value)
    assert key in message and f"{path}[CCD07]" in message


@pytest.mark.parametrize("prefix", ["A", "B", "AP", "BP"])
def test_sip_terms_beyond_the_declared_order(sip_inverse_header, tmp_path, prefix):
    # wcslib silently drops terms above <P>_ORDER: the distortion (and area) would be wrong.
    order = sip_inverse_header[f"{prefix}_ORDER"]
    assert order >= 3
    header = sip_inverse_header.copy()
    header[f"{prefix}_ORDER"] = 2
    high = [k for k in header if re.fullmatch(rf"{prefix}_(\d+)_(\d+)", k)
            and sum(map(int, k.split("_")[-2:])) > 2 and header[k] != 0]
    assert high, "the fixture must have terms above order 2"
    with pytest.raises(InputError, match=f"{prefix}_ORDER") as info:
        SkyWcs.from_header(header)
    assert any(k in str(info.value) for k in high)
    path = tmp_path / "sip.fits"
    _write_image(path, header)
    with pytest.raises(InputError, match=f"{prefix}_ORDER") as info:
        Exposure.read(path)
    assert f"{path}[CCD07]" in str(info.value)


def test_sip_order_above_the_terms_is_fine(sip_header):
    # Missing higher terms are zeros: a larger A_ORDER describes the same distortion.
    header = sip_header.copy()
    header["A_ORDER"] = sip_header["A_ORDER"] + 2
    x, y = np.array([0.0, 63.0, 20.0]), np.array([0.0, 47.0, 30.0])
    np.testing.assert_array_equal(SkyWcs.from_header(header).pixel_area(x, y),
                                  SkyWcs.from_header(sip_header).pixel_area(x, y))


@pytest.mark.parametrize("missing", ["A_ORDER", "B_ORDER"])
def test_sip_terms_without_their_order(sip_header, missing):
    header = sip_header.copy()
    del header[missing]
    with pytest.raises(InputError, match=missing):
        SkyWcs.from_header(header)


@pytest.mark.parametrize("change, word", [
    ({"CD1_1": 0.0, "CD1_2": 0.0}, "singular"),
    ({"CTYPE1": "RA---XYZ-SIP"}, "XYZ"),
    ({"CRVAL2": 100.0}, ""),
])
def test_broken_linear_part_or_projection(tmp_path, sip_header, change, word):
    header = sip_header.copy()
    header.update(change)
    with pytest.raises(InputError, match=word):
        SkyWcs.from_header(header)
    path = tmp_path / "bad.fits"
    _write_image(path, header)
    with pytest.raises(InputError) as info:
        Exposure.read(path)
    assert f"{path}[CCD07]" in str(info.value)


def test_unparsable_header_string():
    with pytest.raises(InputError):
        SkyWcs.from_header("this is not a FITS header at all" * 3)
