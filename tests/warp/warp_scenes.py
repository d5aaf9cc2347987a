"""Scenes for the warp tests (helpers imported by the test modules): a strongly distorted TAN-SIP input with GalSim-rendered stars."""

from __future__ import annotations

import galsim
import numpy as np
from astropy.io import fits

import photocalib as pc
from photocalib.fields import BoundedField
from photocalib.geom import Box
from photocalib.image import MaskPlane


def sip_header(n: int = 768, scale: float = 0.2, k: float = 6e-8, ra: float = 150.0, dec: float = 2.0,
               rotation: float = 7.0) -> fits.Header:
    """A TAN-SIP header whose pixel area varies by about 10 % (cubic radial + quadratic terms)."""
    h = tan_header(n, n, scale, ra, dec, rotation)
    h["CTYPE1"] = "RA---TAN-SIP"
    h["CTYPE2"] = "DEC--TAN-SIP"
    h["A_ORDER"] = 3
    h["B_ORDER"] = 3
    h["A_2_0"] = 3e-6
    h["A_1_1"] = -2e-6
    h["B_0_2"] = 2e-6
    h["B_1_1"] = 1e-6
    h["A_3_0"] = k
    h["A_1_2"] = k
    h["B_2_1"] = k
    h["B_0_3"] = k
    return h


def tan_header(nx: int, ny: int, scale: float, ra: float, dec: float, rotation: float) -> fits.Header:
    """A plain TAN header centred on (ra, dec), rotated by ``rotation`` degrees."""
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    h["CTYPE1"] = "RA---TAN"
    h["CTYPE2"] = "DEC--TAN"
    h["CRPIX1"] = nx / 2 + 0.5
    h["CRPIX2"] = ny / 2 + 0.5
    h["CRVAL1"] = ra
    h["CRVAL2"] = dec
    s = scale / 3600
    th = np.radians(rotation)
    h["CD1_1"] = -s * np.cos(th)
    h["CD1_2"] = s * np.sin(th)
    h["CD2_1"] = s * np.sin(th)
    h["CD2_2"] = s * np.cos(th)
    return h


def render_stars(header: fits.Header, ra, dec, flux, sigma_arcsec: float = 0.35, sky: float = 0.0,
                 stamp: int = 26) -> np.ndarray:
    """Gaussian stars drawn by GalSim through the header's (distorted) WCS; fluence per pixel.

    ``sky`` is a uniform surface brightness (per arcsec²), integrated over each pixel by GalSim.
    """
    gw = galsim.GSFitsWCS(header=header)
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    img = galsim.ImageD(nx, ny, wcs=gw)
    if sky:
        gw.makeSkyImage(img, sky)
    for r, d, f in zip(np.atleast_1d(ra), np.atleast_1d(dec), np.atleast_1d(flux), strict=True):
        pos = gw.toImage(galsim.CelestialCoord(r * galsim.degrees, d * galsim.degrees))
        b = galsim.BoundsI(int(pos.x) - stamp, int(pos.x) + stamp, int(pos.y) - stamp, int(pos.y) + stamp)
        b = b & img.bounds
        if not b.isDefined():
            continue
        galsim.Gaussian(sigma=sigma_arcsec, flux=float(f)).drawImage(
            image=img[b], center=pos, add_to_image=True
        )
    return img.array.copy()


def aperture_sums(image: np.ndarray, x, y, radius: float) -> np.ndarray:
    """Sum of the pixels whose centres lie within ``radius`` of (x, y); NaN if any is NaN."""
    r = int(np.ceil(radius)) + 1
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    out = []
    for xc, yc in zip(x, y, strict=True):
        ix, iy = int(round(xc)), int(round(yc))
        xx, yy = ix + dx, iy + dy
        inside = (xx - xc) ** 2 + (yy - yc) ** 2 < radius**2
        if xx.min() < 0 or yy.min() < 0 or xx.max() >= image.shape[1] or yy.max() >= image.shape[0]:
            out.append(np.nan)
            continue
        out.append(image[yy[inside], xx[inside]].sum())
    return np.asarray(out)


class Scene:
    """An input exposure of stars on a distorted TAN-SIP grid and a rotated TAN target."""

    def __init__(self, n: int = 768, out_scale: float = 0.17, rotation: float = 33.0, seed: int = 5):
        rng = np.random.default_rng(seed)
        self.header = sip_header(n)
        self.wcs = pc.SkyWcs.from_header(self.header)
        step = 64
        g = np.arange(48, n - 48, step, dtype=float)
        gx, gy = np.meshgrid(g, g)
        self.x_in = gx.ravel() + rng.uniform(-3, 3, gx.size)
        self.y_in = gy.ravel() + rng.uniform(-3, 3, gx.size)
        self.flux = rng.uniform(1e4, 1e5, gx.size)
        self.ra, self.dec = self.wcs.pixel_to_sky(self.x_in, self.y_in)
        self.image = render_stars(self.header, self.ra, self.dec, self.flux)
        ra0, dec0 = self.wcs.pixel_to_sky(n / 2, n / 2)
        nout = int(np.ceil(n * 0.2 * 1.5 / out_scale))
        self.out_shape = (nout, nout)
        self.out_scale = out_scale
        self.target = pc.SkyWcs.from_header(
            tan_header(nout, nout, out_scale, float(ra0) + 3e-4, float(dec0) - 5e-4, rotation)
        )
        self.exposure = pc.Exposure(self.image, variance=np.full(self.image.shape, 4.0), wcs=self.wcs,
                                    kind=pc.ImageKind.FLUENCE, unit="count")


def dithered_exposures(n_exp: int = 4, n: int = 384, seed: int = 11, sky: float = 400.0,
                       sigmas=(0.30, 0.36, 0.42, 0.48, 0.33)):
    """Dithered, rotated, differently distorted exposures of the same stars, with noise.

    Each exposure is a FLUENCE image in counts with a constant FLUENCE PhotoCalib (nJy per
    count, different per exposure), a variance plane (sky + source photon noise) and its own
    PSF width. Returns (exposures, star RA, star Dec, true flux in nJy, (ra0, dec0)).
    """
    rng = np.random.default_rng(seed)
    ra0, dec0 = 30.0, -5.0
    # stars on a jittered grid inside the common footprint (+-25 arcsec)
    g = np.linspace(-24.0, 24.0, 5)
    gx, gy = np.meshgrid(g, g)
    dxi = (gx.ravel() + rng.uniform(-1.5, 1.5, gx.size)) / 3600
    deta = (gy.ravel() + rng.uniform(-1.5, 1.5, gx.size)) / 3600
    dec = dec0 + deta
    ra = ra0 + dxi / np.cos(np.radians(dec0))
    flux_njy = 10 ** rng.uniform(5.5, 6.5, ra.size)
    exposures = []
    for i in range(n_exp):
        h = sip_header(n, k=4e-8 * (1 + 0.3 * i), ra=ra0 + rng.uniform(-6, 6) / 3600,
                       dec=dec0 + rng.uniform(-6, 6) / 3600, rotation=rng.uniform(0, 360))
        wcs = pc.SkyWcs.from_header(h)
        calib = rng.uniform(0.8, 1.3)  # nJy per count
        model = render_stars(h, ra, dec, flux_njy / calib, sigma_arcsec=sigmas[i % len(sigmas)])
        area = wcs.pixel_area_field(pc.Box(0, 0, n, n)).fill()
        variance = sky * area + model  # counts^2: sky and source photon noise (gain 1)
        image = model + rng.normal(size=model.shape) * np.sqrt(variance)
        exposures.append(pc.Exposure(image, variance=variance, wcs=wcs, kind=pc.ImageKind.FLUENCE,
                                     unit="count", photo_calib=pc.PhotoCalib(calib, kind=pc.ImageKind.FLUENCE)))
    return exposures, ra, dec, flux_njy, (ra0, dec0)


class TrueCalibration(BoundedField):
    """nJy per electron on the dome-flattened fluence image: 1 / (K t T_v(x, y) SF(x, y))."""

    def __init__(self, sim, visit: int, detector: int, box: Box):
        self._sim, self._visit, self._detector, self._box = sim, visit, detector, box

    @property
    def bbox(self) -> Box:
        return self._box

    def _evaluate(self, x, y):
        survey = self._sim.survey
        t = survey.transmission_at_pixel(self._visit, self._detector, x, y)
        sf = self._sim.camera.star_flat(self._detector, x, y, survey.band, "fiducial")
        return 1.0 / (survey.electrons_per_njy_s * survey.visit(self._visit).exptime * t * sf)


def true_calibrated_fluence(sim, visit: int, detector: int, metadata: dict | None = None) -> pc.Exposure:
    """The simulator's raw -> dome-flattened surface brightness -> fluence with the true
    calibration (`TrueCalibration`); the sky is kept."""
    raw, header = sim.read_raw(visit, detector)
    flat, flat_header = sim.read_dome_flat(detector)
    det = sim.camera.detector(detector)
    electrons = (raw.astype(np.float64) - det.bias) * det.gain
    response = flat / flat_header["LAMPLVL"]  # A Q I_dome: the response to a uniform sky
    variance = (np.maximum(electrons, 0.0) + det.read_noise**2) / response**2
    mask = np.where(raw >= header["SATURATE"], np.uint32(MaskPlane.SAT), np.uint32(0))
    sb = pc.Exposure(electrons / response, variance=variance, mask=mask, wcs=pc.SkyWcs.from_header(header),
                     kind="SURFACE_BRIGHTNESS", unit="electron/arcsec2", metadata=metadata)
    fluence = sb.to_fluence()
    ny, nx = fluence.shape
    calib = pc.PhotoCalib(TrueCalibration(sim, visit, detector, Box(0, 0, nx, ny)), kind="FLUENCE")
    return fluence.replace(photo_calib=calib)
