"""The background mapping M = A · F_sky / F_fid on an Exposure, through background.estimate.

A uniform airglow sky seen by a detector whose r filter edge moves with field radius: on the
photometric image (fluence, fiducial-SED flat) it is S · A · F_sky / F_fid. Divided by M it is
flat; divided by A alone it keeps the chromatic pattern. The truth is integrated directly
(dense Simpson over λ as a function of radius), independently of ChromaticFlat.
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.io import fits
from scipy.integrate import simpson

import photocalib as pc
from photocalib.isr import ChromaticFlat, Spectrum, background_mapping

SHARE = galsim.meta_data.share_dir
BOX = pc.Box(0, 0, 512, 1153)  # a quarter-size megacam detector, same span in field radius
AXIS = (-38.0, -38.0)
R_EDGE = float(np.hypot(BOX.width - 1 - AXIS[0], BOX.height - 1 - AXIS[1]))
SHIFT_EDGE_NM = 3.0
BINNING = 16
SKY = 1000.0  # sky surface brightness, count / arcsec² (sky-SED units)
BP = galsim.Bandpass(f"{SHARE}/bandpasses/LSST_r.dat", "nm")


def t0(lam):
    lam = np.asarray(lam, dtype=np.float64)
    inside = (lam >= BP.blue_limit) & (lam <= BP.red_limit)
    return np.where(inside, BP(np.clip(lam, BP.blue_limit, BP.red_limit)), 0.0)


def t2_at(x, y):
    return ((np.asarray(x) - AXIS[0]) ** 2 + (np.asarray(y) - AXIS[1]) ** 2) / R_EDGE**2


def sky_spectrum() -> Spectrum:
    """Airglow: a red continuum and narrow O I / Na D lines, tabulated finely near the lines."""
    lines = ((557.7, 30.0), (589.3, 8.0), (630.0, 12.0), (636.4, 4.0))
    wl = np.unique(np.concatenate([np.arange(300.0, 1200.0, 2.0)]
                                  + [c + np.linspace(-0.6, 0.6, 49) for c, _ in lines]))
    flam = wl / 500.0
    for centre, strength in lines:
        flam = flam + strength * np.exp(-0.5 * ((wl - centre) / 0.1) ** 2)
    return Spectrum(wl, flam)


FIDUCIAL = Spectrum(np.array([300.0, 1200.0]), np.array([1.0, 1.0]), flux_type="fnu")


def rho_table(spec: Spectrum):
    """ρ(t²) = ∫ T0(λ + shift t²) N dλ / ∫ T0 N dλ on a grid of t², by dense Simpson."""
    lam = np.unique(np.concatenate([np.linspace(525.0, 712.0, 18701), spec.wavelength_nm]))
    lam = lam[(lam >= 525.0) & (lam <= 712.0)]
    n = spec.photons(lam)
    t2 = np.linspace(0.0, 1.0, 201)
    num = simpson(t0(lam[None, :] + SHIFT_EDGE_NM * t2[:, None]) * n[None, :], x=lam, axis=1)
    return t2, num / simpson(t0(lam) * n, x=lam)


def true_ratio(x, y):
    """F_sky / F_fid at pixel positions (cubic interpolation in t² of the dense integrals)."""
    from scipy.interpolate import CubicSpline

    t2, rs = rho_table(sky_spectrum())
    _, rf = rho_table(FIDUCIAL)
    return CubicSpline(t2, rs / rf)(t2_at(x, y))


def sip_wcs() -> pc.SkyWcs:
    """TAN-SIP WCS with a radial cubic distortion about the optical axis (-3 % area at the edge)."""
    a = -0.0075 / R_EDGE**2
    h = fits.Header()
    h.update(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", CRVAL1=150.0, CRVAL2=2.0,
             CRPIX1=AXIS[0] + 1, CRPIX2=AXIS[1] + 1, CD1_1=-0.187 / 3600, CD1_2=0.0, CD2_1=0.0,
             CD2_2=0.187 / 3600, A_ORDER=3, B_ORDER=3, A_3_0=a, A_1_2=a, B_0_3=a, B_2_1=a)
    return pc.SkyWcs.from_header(h)


@pytest.fixture(scope="module")
def setup():
    ny, nx = -(-BOX.height // BINNING), -(-BOX.width // BINNING)
    py = np.diff(np.minimum(np.arange(ny + 1) * BINNING, BOX.height))
    px = np.diff(np.minimum(np.arange(nx + 1) * BINNING, BOX.width))
    yc = np.arange(ny) * BINNING + 0.5 * (py - 1)
    xc = np.arange(nx) * BINNING + 0.5 * (px - 1)
    t2 = t2_at(xc[None, :], yc[:, None]) + ((px[None, :] ** 2 - 1) + (py[:, None] ** 2 - 1)) / 12 / R_EDGE**2
    wl = np.arange(528.0, 712.0, 0.5)
    cube = t0(wl[:, None, None] + SHIFT_EDGE_NM * t2[None])
    flat = ChromaticFlat(wl, cube, (BP.wave_list, BP(BP.wave_list)), bbox=BOX, binning=BINNING,
                         cube_is_response=True)
    wcs = sip_wcs()
    area = wcs.pixel_area_field(BOX)
    yy, xx = np.mgrid[0 : BOX.height, 0 : BOX.width]
    truth_ratio = true_ratio(xx, yy)
    return flat, wcs, area, truth_ratio


def test_round_trip_photometric_to_background_image_is_exact(setup):
    flat, wcs, area, _ = setup
    m = background_mapping(area, chromatic_ratio=flat.ratio_field(sky_spectrum(), FIDUCIAL, order=6, bin_size=2))
    m_img = m.fill()
    exp = pc.Exposure(SKY * m_img, wcs=wcs, kind=pc.ImageKind.FLUENCE, unit="count", background_mapping=m)
    assert exp.background_mapping is m
    bkg = pc.background.estimate(exp, mask_sources=False)
    # photometric image -> background image (÷ M) is exactly flat, and back (× M) exactly the image
    np.testing.assert_allclose(bkg.fill(), SKY, rtol=1e-10)
    back = pc.background.background_image(exp, pc.ConstantField(SKY, BOX))
    np.testing.assert_allclose(back, exp.image, rtol=1e-15, atol=0)
    residual = pc.background.subtract(exp, bkg).image
    assert np.max(np.abs(residual)) <= 1e-9 * SKY
    # the convenience that builds and attaches M from the exposure's own WCS
    attached = pc.isr.attach_background_mapping(exp.replace(background_mapping=None), flat,
                                                sky_spectrum(), FIDUCIAL, order=6, bin_size=2)
    np.testing.assert_allclose(attached.background_mapping.fill(), m_img, rtol=1e-12)
    with pytest.raises(pc.InputError, match="does not match"):
        pc.isr.attach_background_mapping(pc.Exposure(np.ones((5, 5)), wcs=wcs), flat, sky_spectrum(), FIDUCIAL)
    # the same through the surface-brightness version of the photometric image
    sb = exp.to_surface_brightness()
    np.testing.assert_allclose(pc.background.estimate(sb, mask_sources=False).fill(), SKY, rtol=1e-10)


def test_sky_sed_background_through_m_is_flat_and_fiducial_flat_keeps_chromatic_pattern(setup):
    flat, wcs, area, truth_ratio = setup
    a_img = area.fill()
    rng = np.random.default_rng(4)
    truth = SKY * a_img * truth_ratio  # the photometric image of a uniform sky
    image = truth + rng.normal(0.0, 0.01, truth.shape) * truth
    ratio = flat.ratio_field(sky_spectrum(), FIDUCIAL, order=6, bin_size=2)
    m = background_mapping(area, chromatic_ratio=ratio)
    exp = pc.Exposure(image, wcs=wcs, kind=pc.ImageKind.FLUENCE, unit="count", background_mapping=m)

    # through M: the background image is flat, and the model of the photometric image is right
    bkg = pc.background.estimate(exp, mesh_size=64)
    sb = bkg.fill()
    assert np.max(np.abs(sb / SKY - 1)) <= 1e-3, np.max(np.abs(sb / SKY - 1))
    model = pc.background.background_image(exp, bkg)
    assert np.max(np.abs(model / truth - 1)) <= 1e-3

    # through A only (the fiducial flat): the background image keeps the chromatic pattern,
    # which a sky uniform on the sky must not have
    exp_a = exp.replace(background_mapping=None)
    sb_a = pc.background.estimate(exp_a, mesh_size=64).fill()
    pattern = truth_ratio
    assert np.ptp(pattern) > 5e-3  # the chromatic pattern is five times the tolerance
    assert np.ptp(sb_a / SKY) > 0.8 * np.ptp(pattern)
    assert np.max(np.abs(sb_a / (SKY * pattern) - 1)) <= 1e-3  # it is that pattern
    assert np.max(np.abs(sb_a / SKY - 1)) > 4e-3
