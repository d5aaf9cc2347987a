"""Multi-amplifier raws (DECam: two amplifiers, HSC: four): per-amplifier overscan, gain, read
noise and saturation, against a scene whose electrons are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.image import MaskPlane
from photocalib.isr import DomeFlat, isr_from_hdu
from photocalib.isr.amplifiers import amplifiers_in, assemble_amplifiers

N = 64
OVER = 8


def _sec(x1, x2, y1, y2):
    return f"[{x1}:{x2},{y1}:{y2}]"


@pytest.fixture(scope="module")
def scene():
    header = hsc_like_sip_header(nx=N, ny=N, axis_pixel=(-12000.0, -8000.0), k1=4e-10)
    wcs = pc.SkyWcs.from_header(header)
    area = wcs.pixel_area_field(pc.Box(0, 0, N, N)).fill()
    yy, xx = np.mgrid[0:N, 0:N]
    response = 0.9 + 0.1 * xx / N
    lamp = 5.0e6
    flat = lamp * area * response
    sky_sb = 3.0e4
    electrons = sky_sb * area * response
    return header, wcs, electrons, flat, lamp, sky_sb


def _decam_like(header, electrons):
    """Two amplifiers: A reads columns 0..N/2-1 left to right, B the rest right to left; each
    has its own per-row bias (overscan on the outside), gain, read noise and saturation."""
    half = N // 2
    rows = np.arange(N)[:, None]
    gains = {"A": 4.0, "B": 4.4}
    bias = {"A": 1000.0 + 0.5 * rows, "B": 1300.0 - 0.2 * rows}
    raw = np.zeros((N, 2 * OVER + N))
    raw[:, :OVER] = bias["A"]
    raw[:, OVER:OVER + half] = electrons[:, :half] / gains["A"] + bias["A"]
    raw[:, OVER + half:OVER + N] = electrons[:, half:][:, ::-1] / gains["B"] + bias["B"]
    raw[:, OVER + N:] = bias["B"]
    h = header.copy()
    h.update({
        "DATASECA": _sec(OVER + 1, OVER + half, 1, N), "BIASSECA": _sec(1, OVER, 1, N),
        "CCDSECA": _sec(1, half, 1, N), "GAINA": gains["A"], "RDNOISEA": 6.0, "SATURATA": 30000.0,
        "DATASECB": _sec(OVER + half + 1, OVER + N, 1, N), "BIASSECB": _sec(OVER + N + 1, 2 * OVER + N, 1, N),
        "CCDSECB": _sec(N, half + 1, 1, N), "GAINB": gains["B"], "RDNOISEB": 5.0,
        # Half of amplifier B's pixels saturate; none of A's.
        "SATURATB": float(np.median(raw[:, OVER + half:OVER + N])),
    })
    return raw, h, {"A": 6.0, "B": 5.0}


def test_two_amplifiers_give_back_the_electrons(scene):
    header, wcs, electrons, flat, lamp, sky_sb = scene
    raw, h, noise = _decam_like(header, electrons)
    assert [a.name for a in amplifiers_in(h)] == ["A", "B"]
    e, var, mask = assemble_amplifiers(raw, h)
    np.testing.assert_allclose(e, electrons, rtol=1e-6)
    rn2 = np.where(np.arange(N)[None, :] < N // 2, noise["A"] ** 2, noise["B"] ** 2)
    np.testing.assert_allclose(var, electrons + rn2, rtol=1e-6)
    # Saturation is per amplifier, on the raw ADU of each.
    half = N // 2
    expected = np.zeros((N, N), bool)
    expected[:, :half] = electrons[:, :half] / 4.0 + 1000.0 + 0.5 * np.arange(N)[:, None] >= 30000.0
    expected[:, half:] = electrons[:, half:] / 4.4 + 1300.0 - 0.2 * np.arange(N)[:, None] >= h["SATURATB"]
    assert expected[:, half:].any() and not expected[:, :half].any()
    np.testing.assert_array_equal((mask & MaskPlane.SAT) > 0, expected)


def test_isr_from_a_two_amplifier_hdu(scene):
    header, wcs, electrons, flat, lamp, sky_sb = scene
    raw, h, noise = _decam_like(header, electrons)
    h["SATURATE"] = 10.0  # a single-amplifier keyword must not be applied to the electrons
    exp = isr_from_hdu(fits.ImageHDU(raw.astype(np.float32), header=h),
                       DomeFlat.from_array(flat, header=fits.Header({"LAMPLVL": lamp})), wcs=wcs)
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS and exp.shape == (N, N)
    np.testing.assert_allclose(exp.image, sky_sb, rtol=1e-5)
    rn2 = np.where(np.arange(N)[None, :] < N // 2, 36.0, 25.0)
    np.testing.assert_allclose(exp.variance, (electrons + rn2) / (flat / lamp) ** 2, rtol=1e-5)
    assert ((exp.mask & MaskPlane.SAT) > 0).sum() == ((electrons[:, N // 2:] / 4.4 + 1300.0
                                                 - 0.2 * np.arange(N)[:, None]) >= h["SATURATB"]).sum()


def test_four_amplifiers_side_by_side(scene):
    """HSC-like: four amplifiers, each followed by its overscan, no CCDSEC: placed in raw x order."""
    header, wcs, electrons, flat, lamp, sky_sb = scene
    q = N // 4
    gains = [3.0, 3.2, 2.9, 3.1]
    biases = [900.0, 950.0, 1010.0, 980.0]
    raw = np.zeros((N, 4 * (q + OVER)))
    h = header.copy()
    for k, L in enumerate("ABCD"):
        x0 = k * (q + OVER)
        raw[:, x0:x0 + q] = electrons[:, k * q:(k + 1) * q] / gains[k] + biases[k]
        raw[:, x0 + q:x0 + q + OVER] = biases[k]
        h[f"DATASEC{L}"] = _sec(x0 + 1, x0 + q, 1, N)
        h[f"BIASSEC{L}"] = _sec(x0 + q + 1, x0 + q + OVER, 1, N)
        h[f"GAIN{L}"] = gains[k]
        h[f"RDNOISE{L}"] = 4.0 + k
    e, var, _ = assemble_amplifiers(raw, h)
    np.testing.assert_allclose(e, electrons, rtol=1e-6)
    np.testing.assert_allclose(var[:, 3 * q:], electrons[:, 3 * q:] + 49.0, rtol=1e-6)


def test_amplifier_keywords_missing(scene):
    header, wcs, electrons, flat, lamp, sky_sb = scene
    raw, h, _ = _decam_like(header, electrons)
    del h["BIASSECB"]
    with pytest.raises(pc.InputError, match="amplifier B: needs DATASECB and BIASSECB"):
        assemble_amplifiers(raw, h)
