"""Camera model truth: published distortion, exact TAN-SIP headers, pixel areas, chromatic response."""

from __future__ import annotations

import json
import math

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import photocalib as pc
from photocalib.sim import Camera, spectra

ARCSEC = 180 * 3600 / math.pi


def _gnomonic(ra, dec, ra0, dec0):
    """Independent gnomonic projection (arcsec) about (ra0, dec0), all in degrees."""
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, dtype=float)) for v in (ra, dec, ra0, dec0))
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return xi * ARCSEC, eta * ARCSEC


def _astropy_area(header, x, y, h=0.5):
    """Solid angle per pixel (arcsec^2) from an astropy WCS: local gnomonic central differences."""
    w = WCS(header)
    ra0, dec0 = w.all_pix2world(x, y, 0)
    pts = {k: w.all_pix2world(x + dx, y + dy, 0) for k, (dx, dy) in
           {"xp": (h, 0), "xm": (-h, 0), "yp": (0, h), "ym": (0, -h)}.items()}
    proj = {k: _gnomonic(p[0], p[1], ra0, dec0) for k, p in pts.items()}
    dxi_dx = (proj["xp"][0] - proj["xm"][0]) / (2 * h)
    deta_dx = (proj["xp"][1] - proj["xm"][1]) / (2 * h)
    dxi_dy = (proj["yp"][0] - proj["ym"][0]) / (2 * h)
    deta_dy = (proj["yp"][1] - proj["ym"][1]) / (2 * h)
    return np.abs(dxi_dx * deta_dy - dxi_dy * deta_dx)


def _area_ratio_at(cam: Camera, u: float, v: float) -> float:
    """Area at focal-plane point (u, v) mm over the area on the optical axis, from detector 0's
    header (the SIP polynomial holds beyond the detector's own pixels)."""
    d = cam.detector(0)
    ny, nx = d.shape
    p = cam.config.pixel_pitch_mm
    x = (u - d.center_mm[0]) / p + (nx - 1) / 2
    y = (v - d.center_mm[1]) / p + (ny - 1) / 2
    header = cam.detector_wcs(0, 30.0, -10.0, 0.0)
    xa, ya = cam.optical_axis_pixel(0)
    return float(_astropy_area(header, x, y) / _astropy_area(header, xa, ya))


@pytest.mark.parametrize("shape,ndet", [((256, 256), 16), (None, None)])
def test_presets_give_published_area_change(shape, ndet):
    # Measured through the header with astropy, independently of the camera's own area formula.
    # The field edge of a circular layout is its farthest detector corner.
    for preset, change in (("hsc-like", 0.12), ("decam-like", 0.01)):
        cam = Camera.preset(preset, detector_shape=shape, n_detectors=ndet)
        ny, nx = cam.config.detector_shape
        p = cam.config.pixel_pitch_mm
        r = max(math.hypot(abs(d.center_mm[0]) + nx * p / 2, abs(d.center_mm[1]) + ny * p / 2) for d in cam.detectors)
        for phi in (0.3, 2.0):
            assert _area_ratio_at(cam, r * math.cos(phi), r * math.sin(phi)) == pytest.approx(1 - change, abs=1e-6)
    # MegaCam's square field: 3 % at the half-width, 5 % in the corners.
    meg = Camera.preset("megacam-like", detector_shape=shape, n_detectors=ndet)
    ny, nx = meg.config.detector_shape
    p = meg.config.pixel_pitch_mm
    half = max(max(abs(d.center_mm[0]) + nx * p / 2, abs(d.center_mm[1]) + ny * p / 2) for d in meg.detectors)
    assert _area_ratio_at(meg, half, 0.0) == pytest.approx(0.97, abs=1e-6)
    assert _area_ratio_at(meg, 0.0, -half) == pytest.approx(0.97, abs=1e-6)
    assert _area_ratio_at(meg, -half, half) == pytest.approx(0.95, abs=1e-6)


@pytest.mark.parametrize("preset", ["hsc-like", "megacam-like", "decam-like"])
@pytest.mark.parametrize("ra,dec,rot", [(150.0, 2.0, 30.0), (0.01, 60.0, 200.0), (359.99, -85.0, 91.0)])
def test_sip_header_matches_model(preset, ra, dec, rot):
    cam = Camera.preset(preset, detector_shape=(300, 200), n_detectors=12)
    for det in (0, 5, cam.n_detectors - 1):
        header = cam.detector_wcs(det, ra, dec, rot)
        ny, nx = cam.detector(det).shape
        x, y = np.meshgrid(np.linspace(0, nx - 1, 23), np.linspace(0, ny - 1, 17))
        w = WCS(header)
        ra_h, dec_h = w.all_pix2world(x, y, 0)
        ra_m, dec_m = cam.pixel_to_sky(det, x, y, ra, dec, rot)
        xi, eta = _gnomonic(ra_h, dec_h, ra_m, dec_m)
        assert np.hypot(xi, eta).max() * 1e3 < 1.0  # mas
        # Pixel area of the header vs the model's (smooth) area.
        a_h = _astropy_area(header, x, y)
        a_m = cam.pixel_area(det, x, y, tree_rings=False)
        assert np.abs(a_h / a_m - 1).max() < 1e-5
        # Inverse: the model's sky_to_pixel and the header's inverse SIP polynomial.
        xb, yb = cam.sky_to_pixel(det, ra_m, dec_m, ra, dec, rot)
        assert np.hypot(xb - x, yb - y).max() < 1e-6
        # The fitted inverse polynomial (AP, BP), after a round trip through header text.
        w_text = WCS(fits.Header.fromstring(header.tostring()))
        foc = w_text.sip_pix2foc(np.stack([x.ravel(), y.ravel()], 1), 0)
        back = w_text.sip_foc2pix(foc, 0)
        assert np.abs(back - np.stack([x.ravel(), y.ravel()], 1)).max() < 1e-5


def test_header_through_skywcs_and_galsim():
    cam = Camera.preset("hsc-like", detector_shape=(256, 256), n_detectors=16)
    det = 15
    header = cam.detector_wcs(det, 10.0, 20.0, 45.0)
    x, y = np.meshgrid(np.linspace(0, 255, 9), np.linspace(0, 255, 9))
    sw = pc.SkyWcs.from_header(header)
    np.testing.assert_allclose(sw.pixel_area(x, y), cam.pixel_area(det, x, y), rtol=1e-7)
    ra, dec = sw.pixel_to_sky(x, y)
    ra_m, dec_m = cam.pixel_to_sky(det, x, y, 10.0, 20.0, 45.0)
    xi, eta = _gnomonic(ra, dec, ra_m, dec_m)
    assert np.hypot(xi, eta).max() < 1e-3
    gw = galsim.GSFitsWCS(header=header)
    ra_g, dec_g = gw.xyToradec(x.ravel() + 1, y.ravel() + 1, units="deg")
    xi, eta = _gnomonic(ra_g, dec_g, ra_m.ravel(), dec_m.ravel())
    assert np.hypot(xi, eta).max() < 1e-3
    assert gw.pixelArea(galsim.PositionD(11.0, 201.0)) == pytest.approx(
        float(cam.pixel_area(det, 10.0, 200.0)), rel=1e-6)


def test_area_trend_is_radial_and_smaller_at_edge():
    cam = Camera.preset("hsc-like", detector_shape=(256, 256), n_detectors=16)
    xs, ys = np.meshgrid(np.arange(0, 256, 32.0), np.arange(0, 256, 32.0))
    t = np.concatenate([cam.field_t(d.id, xs, ys).ravel() for d in cam.detectors])
    a = np.concatenate([cam.pixel_area(d.id, xs, ys).ravel() for d in cam.detectors])
    assert np.corrcoef(t**2, a)[0, 1] < -0.999
    assert a.max() / a.min() > 1.10


def test_tree_rings_change_area_not_wcs():
    cam = Camera.preset("hsc-like", detector_shape=(256, 256), n_detectors=4, tree_rings=True)
    x, y = np.meshgrid(np.arange(256.0), np.arange(256.0))
    tr = cam.tree_ring(2, x, y)
    assert 5e-4 < np.abs(tr - 1).max() <= cam.config.tree_ring_amplitude
    np.testing.assert_allclose(cam.pixel_area(2, x, y) / cam.pixel_area(2, x, y, tree_rings=False), tr, rtol=1e-12)
    plain = Camera.preset("hsc-like", detector_shape=(256, 256), n_detectors=4)
    assert cam.detector_wcs(2, 1.0, 2.0, 3.0) == plain.detector_wcs(2, 1.0, 2.0, 3.0)


def test_json_round_trip():
    cam = Camera.preset("megacam-like", detector_shape=(128, 96), n_detectors=6, tree_rings=True, seed=5)
    again = Camera.from_dict(json.loads(cam.to_json()))
    assert again.to_dict() == cam.to_dict()
    np.testing.assert_array_equal(again.qe(3), cam.qe(3))


def test_unknown_preset_and_options():
    with pytest.raises(pc.InputError, match="preset"):
        Camera.preset("nope")
    with pytest.raises(pc.InputError, match="unknown"):
        Camera.preset("hsc-like", not_a_field=3)
    with pytest.raises(pc.InputError, match="detector"):
        Camera.preset("hsc-like", detector_shape=(256, 256), n_detectors=4).detector(4)


def test_achromatic_presets_have_unit_rho():
    cam = Camera.preset("hsc-like", detector_shape=(64, 64), n_detectors=4)
    assert not cam.is_chromatic
    assert np.all(cam.rho(1, [0, 63], [0, 63], "sky", "r") == 1.0)
    np.testing.assert_array_equal(cam.star_flat(1, [0.0, 63.0], [0.0, 63.0], "r", "bb3400"),
                                  cam.illumination_ratio(1, [0.0, 63.0], [0.0, 63.0]))


def test_chromatic_rho_matches_galsim_integration():
    cam = Camera.preset("megacam-like", detector_shape=(256, 256), n_detectors=16)
    det = 0  # a corner detector: the filter edge has moved the most
    x, y = 10.0, 20.0
    t = float(cam.field_t(det, x, y))
    shift = cam.config.filter_shift_nm_edge * t**2
    slope = cam.detector(det).qe_slope
    bp0 = spectra.bandpass("r")
    # The shifted filter transmits below the nominal blue limit: extend the grid there.
    inside = np.arange(bp0.blue_limit, bp0.red_limit, 0.05)
    w = np.arange(bp0.blue_limit - 10.0, bp0.red_limit, 0.05)
    t_shifted = np.interp(w + shift, inside, bp0(inside), left=0.0, right=0.0)
    centre = float(np.sum(spectra.WAVELENGTH_NM * spectra.throughput("r")) / np.sum(spectra.throughput("r")))
    resp = galsim.Bandpass(galsim.LookupTable(w, t_shifted * (1 + slope * (w - centre) / 100.0)), "nm")
    for template in ("bb3400", "vega"):
        sed = next(s for s in spectra.stellar_templates() if s.name == template).sed()
        expected = sed.calculateFlux(resp) / sed.calculateFlux(bp0)
        assert float(cam.rho(det, x, y, template, "r")) == pytest.approx(expected, abs=3e-4)
    # The filter edge makes red and blue stars differ, more at the edge than on the axis.
    edge = cam.rho(det, x, y, "bb3400", "r") / cam.rho(det, x, y, "vega", "r")
    assert abs(float(edge) - 1) > 1e-3


def test_electrons_per_njy_matches_direct_integral():
    w = spectra.WAVELENGTH_NM
    t0 = spectra.throughput("r")
    h = 6.62607015e-27
    direct = 4.9e5 * 1e-32 / h * np.trapezoid(t0 / w, w)
    assert spectra.electrons_per_second_per_njy("r", 4.9e5) == pytest.approx(direct, rel=2e-3)


def test_template_colours_are_ordered_by_temperature():
    temps = [t for t in spectra.stellar_templates() if t.name != "vega"]
    gi = [-2.5 * math.log10(spectra.ab_flux_njy(t.name, "g") / spectra.ab_flux_njy(t.name, "i")) for t in temps]
    assert all(a > b for a, b in zip(gi, gi[1:], strict=False))
    assert gi[0] > 1.5 and gi[-1] < 0.5


def test_galsim_sky_image_is_the_model_area():
    cam = Camera.preset("hsc-like", detector_shape=(200, 160), n_detectors=16)
    det = 0
    gw = galsim.GSFitsWCS(header=cam.detector_wcs(det, 200.0, -30.0, 123.0))
    img = galsim.ImageD(160, 200, wcs=gw)
    gw.makeSkyImage(img, 1.0)
    x, y = np.meshgrid(np.arange(160.0), np.arange(200.0))
    np.testing.assert_allclose(img.array, cam.pixel_area(det, x, y), rtol=1e-6)
