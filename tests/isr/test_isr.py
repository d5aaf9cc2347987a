"""ISR: flat-fielding gives surface brightness exactly; masks, variance, headers, tree rings."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.fields import BoundedField
from photocalib.image import MaskPlane
from photocalib.isr import DomeFlat, isr_from_hdu, run_isr

N = 256


class RingField(BoundedField):
    """Small-scale pixel-size variation (tree rings) about a point off the detector."""

    def __init__(self, box):
        self._box = box

    @property
    def bbox(self):
        return self._box

    def _evaluate(self, x, y):
        return 1.0 + 0.01 * np.sin(np.hypot(x + 300.0, y + 200.0) / 6.0)


@pytest.fixture(scope="module")
def header():
    return hsc_like_sip_header(nx=N, ny=N, axis_pixel=(-12000.0, -8000.0), k1=4e-10)


@pytest.fixture(scope="module")
def wcs(header):
    return pc.SkyWcs.from_header(header)


def _scene(wcs, rng, ring=None):
    box = pc.Box(0, 0, N, N)
    area = wcs.pixel_area_field(box).fill()
    true_area = area * (ring.fill() if ring is not None else 1.0)
    yy, xx = np.mgrid[0:N, 0:N]
    response = (0.9 + 0.1 * xx / N) * (1 + 0.02 * rng.normal(size=(N, N)))  # QE × illumination
    lamp = 5.0e6
    flat = lamp * true_area * response
    return area, true_area, response, lamp, flat


def test_flat_fielding_gives_surface_brightness(wcs, rng):
    area, _, response, lamp, flat = _scene(wcs, rng)
    sky_sb, gain, bias = 3.0e4, 2.5, 1000.0  # e-/arcsec²
    electrons = sky_sb * area * response
    raw = electrons / gain + bias
    hdr = fits.Header({"LAMPLVL": lamp})
    exp = run_isr(raw, flat=DomeFlat.from_array(flat, header=hdr), wcs=wcs, gain=gain, bias=bias, read_noise=4.0)
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    assert exp.unit == pc.Exposure(np.ones((2, 2))).unit  # count / arcsec2
    np.testing.assert_allclose(exp.image, sky_sb, rtol=2e-6)  # float32 arithmetic
    np.testing.assert_allclose(exp.to_fluence().image, sky_sb * area, rtol=3e-6)
    expected_var = (electrons + 16.0) / (flat / lamp) ** 2
    np.testing.assert_allclose(exp.variance, expected_var, rtol=1e-5)
    # Without LAMPLVL the level is the median flat per unit area: a constant factor, still flat.
    exp2 = run_isr(raw, flat=flat, wcs=wcs, gain=gain, bias=bias)
    ratio = np.asarray(exp2.image) / sky_sb
    assert np.std(ratio) / np.mean(ratio) < 2e-6
    assert np.mean(ratio) == pytest.approx(np.median(flat / area) / lamp, rel=1e-6)


def test_masks_and_bad_flat_pixels(wcs, rng):
    area, _, response, lamp, flat = _scene(wcs, rng)
    flat[10, 20] = 0.0
    raw = np.full((N, N), 500.0)
    raw[5, 5] = 65535.0
    bpm = np.zeros((N, N), bool)
    bpm[7, 9] = True
    exp = run_isr(raw, flat=flat, wcs=wcs, saturation=60000.0, bad_pixel_mask=bpm)
    m = np.asarray(exp.mask)
    assert m[5, 5] & MaskPlane.SAT and m[7, 9] & MaskPlane.BAD and m[10, 20] & MaskPlane.BAD
    assert np.count_nonzero(m) == 3
    with pytest.raises(pc.InputError, match="GAIN"):
        run_isr(raw, flat=flat, wcs=wcs, gain=-1.0)
    with pytest.raises(pc.InputError, match="shape"):
        run_isr(raw[:10], flat=flat, wcs=wcs)
    with pytest.raises(pc.InputError, match="LAMPLVL"):
        DomeFlat.from_array(flat)


def test_tree_ring_correction_makes_fluence_exact(wcs, rng):
    ring = RingField(pc.Box(0, 0, N, N))
    area, true_area, response, lamp, flat = _scene(wcs, rng, ring)
    sky_sb = 2.0e4
    raw = sky_sb * true_area * response
    dome = DomeFlat.from_array(flat, level=lamp)
    plain = run_isr(raw, flat=dome, wcs=wcs)
    # Flat-fielded: true surface brightness, but image × A_wcs misses the rings.
    np.testing.assert_allclose(plain.image, sky_sb, rtol=2e-6)
    fixed = run_isr(raw, flat=dome, wcs=wcs, pixel_size_correction=ring)
    np.testing.assert_allclose(fixed.to_fluence().image, sky_sb * true_area, rtol=3e-6)
    # Its background mapping is the true area, so the background is still flat.
    bg = pc.background.estimate(fixed, mesh_size=32, order=0, mask_sources=False)
    assert bg.fill() == pytest.approx(np.full((N, N), sky_sb), rel=1e-5)


def test_isr_from_hdu_reads_keywords_and_overscan(header, wcs, rng):
    area, _, response, lamp, flat = _scene(wcs, rng)
    sky_sb, gain = 1.0e4, 1.7
    data = sky_sb * area * response / gain + 800.0
    h = header.copy()
    h.update(VISIT=12, DETECTOR=3, GAIN=gain, RDNOISE=5.0, BIAS=800.0, SATURATE=60000.0, EXTNAME="DET003")
    exp = isr_from_hdu(fits.ImageHDU(data.astype(np.float32), h), DomeFlat.from_array(flat, level=lamp))
    assert exp.metadata["VISIT"] == 12 and exp.metadata["DETECTOR"] == 3
    assert exp.wcs == wcs
    np.testing.assert_allclose(exp.image, sky_sb, rtol=1e-5)
    # Overscan: 16 columns at a per-row level, trimmed away.
    rows = 790.0 + 0.05 * np.arange(N)
    full = np.concatenate([data - 800.0 + rows[:, None], np.repeat(rows[:, None], 16, axis=1)], axis=1)
    h2 = h.copy()
    del h2["BIAS"]
    h2["DATASEC"] = f"[1:{N},1:{N}]"
    h2["BIASSEC"] = f"[{N + 1}:{N + 16},1:{N}]"
    exp2 = isr_from_hdu(fits.ImageHDU(full, h2), DomeFlat.from_array(flat, level=lamp))
    np.testing.assert_allclose(exp2.image, sky_sb, rtol=1e-5)
    del h2["BIASSEC"]
    with pytest.raises(pc.InputError, match="BIAS"):
        isr_from_hdu(fits.ImageHDU(data, h2), flat)


def test_tree_ring_correction_from_a_spline_field(wcs, rng):
    """The camera's pixel-size map as a SplineField (as a camera model would ship it)."""
    box = pc.Box(0, 0, N, N)
    ring = RingField(box)
    spline = pc.SplineField.approximate(ring, nodes=96)
    approx_err = np.abs(spline.fill() / ring.fill() - 1).max()
    assert approx_err < 2e-4
    area, true_area, response, lamp, flat = _scene(wcs, rng, ring)
    raw = 2.0e4 * true_area * response
    fixed = run_isr(raw, flat=DomeFlat.from_array(flat, level=lamp), wcs=wcs, pixel_size_correction=spline)
    fluence = np.asarray(fixed.to_fluence().image)
    np.testing.assert_allclose(fluence, 2.0e4 * area * spline.fill(), rtol=3e-6)
    assert np.abs(fluence / (2.0e4 * true_area) - 1).max() < approx_err + 3e-6
