"""Rendering with GalSim: raw detector images of a visit, dome flats and monochromatic flats.

Each function renders one detector and is a pure function of its inputs, so
:func:`photocalib.sim.simulate` can run them as independent Dask tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np
from astropy.io import fits

from ..errors import InputError
from . import spectra
from .camera import Camera
from .survey import Survey

__all__ = ["RenderedDetector", "render_detector", "dome_flat", "monochromatic_flats",
           "mono_wavelengths", "raw_header", "stamp_half_size", "noise_seed"]

#: Stamp half-size in units of the FWHM; a Moffat (beta 3.5) loses ~2e-5 of its flux beyond it.
STAMP_FWHM = 9.0


def noise_seed(*parts: int) -> int:
    """A 32-bit seed for GalSim deviates derived from integers (seed, visit, detector, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0]) or 1


def stamp_half_size(camera: Camera, fwhm_arcsec: float) -> int:
    """Half-size (pixels) of the postage stamp each star is drawn on."""
    smallest = camera.config.pixel_scale_arcsec * math.sqrt(min(1.0, 1.0 + camera.config.area_change_edge))
    return int(math.ceil(STAMP_FWHM * fwhm_arcsec / smallest)) + 2


def make_psf(survey: Survey, visit: int) -> galsim.GSObject:
    """The visit's PSF (unit flux): Moffat or Kolmogorov of the visit's FWHM."""
    v = survey.visit(visit)
    if survey.config.psf == "kolmogorov":
        return galsim.Kolmogorov(fwhm=v.seeing_fwhm)
    return galsim.Moffat(beta=survey.config.moffat_beta, fwhm=v.seeing_fwhm)


@dataclass(frozen=True)
class RenderedDetector:
    """A rendered raw image and the truth of every star whose centre falls on it.

    Attributes
    ----------
    visit, detector : int
    image : ndarray float32 [ny, nx]
        Raw ADU (bias + electrons / gain, noisy, clipped at saturation).
    header : astropy Header
        The raw HDU's header (WCS and the keywords of :func:`raw_header`).
    stars : dict of ndarray
        Per-star truth columns (see :func:`photocalib.sim.simulate`).
    """

    visit: int
    detector: int
    image: np.ndarray
    header: fits.Header
    stars: dict[str, np.ndarray]


def raw_header(camera: Camera, survey: Survey, visit: int, detector: int) -> fits.Header:
    """Header of a raw detector HDU: the TAN-SIP WCS plus VISIT, DETECTOR, FILTER, EXPTIME,
    MJD-OBS, AIRMASS, GAIN, RDNOISE, BIAS, SATURATE."""
    v = survey.visit(visit)
    d = camera.detector(detector)
    h = camera.detector_wcs(detector, v.ra, v.dec, v.rotation_deg)
    h["EXTNAME"] = f"DET{detector:03d}"
    h["INSTRUME"] = (camera.config.name, "simulated camera preset")
    h["VISIT"] = (v.visit, "visit number")
    h["DETECTOR"] = (d.id, "detector number")
    h["FILTER"] = (survey.band, "LSST bandpass shipped with GalSim")
    h["EXPTIME"] = (v.exptime, "[s] exposure time")
    h["MJD-OBS"] = (v.mjd, "[d] start of exposure")
    h["AIRMASS"] = (v.airmass, "airmass")
    h["GAIN"] = (d.gain, "[electron/adu]")
    h["RDNOISE"] = (d.read_noise, "[electron] read noise")
    h["BIAS"] = (d.bias, "[adu] bias level")
    h["SATURATE"] = (d.saturation, "[adu] raw value at which pixels saturate")
    h["BUNIT"] = "adu"
    h["BORE-RA"] = (v.ra, "[deg] pointing (optical axis)")
    h["BORE-DEC"] = (v.dec, "[deg] pointing (optical axis)")
    h["ROTANG"] = (v.rotation_deg, "[deg] position angle of focal-plane +v")
    return h


def _pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    return np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64))


def render_detector(camera: Camera, survey: Survey, visit: int, detector: int,
                    stars: dict[str, np.ndarray], seed: int) -> RenderedDetector:
    """Render one raw detector image of a visit.

    Electrons in a pixel are ``Q I_sky (stars + t S A TR rho_sky)`` (see the package docstring),
    then Poisson and read noise (``galsim.CCDNoise``), ``/ gain + bias``, clipped at SATURATE.

    Parameters
    ----------
    camera, survey : Camera, Survey
    visit, detector : int
    stars : dict of ndarray
        ``star``, ``ra``, ``dec``, ``template``, ``flux`` (nJy in the survey band): candidates.
    seed : int
        Survey seed; the noise seed is derived from (seed, visit, detector).

    Returns
    -------
    RenderedDetector
    """
    v = survey.visit(visit)
    d = camera.detector(detector)
    ny, nx = d.shape
    band = survey.band
    header = raw_header(camera, survey, visit, detector)
    gs_wcs = galsim.GSFitsWCS(header=header)

    # Stars: positions from the camera model (identical to the header to < 1e-6 pixel).
    x, y = camera.sky_to_pixel(detector, stars["ra"], stars["dec"], v.ra, v.dec, v.rotation_deg)
    half = stamp_half_size(camera, v.seeing_fwhm)
    near = (x > -half) & (x < nx - 1 + half) & (y > -half) & (y < ny - 1 + half)
    x, y = x[near], y[near]
    sel = {k: np.asarray(val)[near] for k, val in stars.items()}
    xi, eta = camera.tangent_plane(detector, x, y, v.rotation_deg)
    trans = survey.transmission(visit, xi, eta)
    rho = np.ones_like(x)
    if camera.is_chromatic:
        for name in np.unique(sel["template"]):
            m = sel["template"] == name
            rho[m] = camera.rho(detector, x[m], y[m], str(name), band)
    expected = sel["flux"] * survey.electrons_per_njy_s * v.exptime * trans * rho

    psf = make_psf(survey, visit)
    stars_img = galsim.ImageF(nx, ny, wcs=gs_wcs)  # GalSim pixel (1, 1) is our (0, 0)
    drawn = np.zeros_like(x)
    on_image = np.zeros_like(x)
    full = stars_img.bounds
    for i in range(x.size):
        pos = galsim.PositionD(x[i] + 1.0, y[i] + 1.0)
        ix, iy = int(round(x[i])) + 1, int(round(y[i])) + 1
        bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
        # Draw on a whole stamp with the local WCS at the star, so the drawn total is the star's
        # fluence whatever the pixel size, then add the part that lands on the detector.
        stamp = galsim.ImageF(bounds, wcs=gs_wcs.local(image_pos=pos))
        psf.withFlux(float(expected[i])).drawImage(image=stamp, center=pos, method="auto")
        drawn[i] = stamp.array.sum(dtype=np.float64)
        overlap = bounds & full
        if overlap.isDefined():
            stars_img[overlap] += stamp[overlap]
            on_image[i] = stamp[overlap].array.sum(dtype=np.float64) / max(drawn[i], 1e-300)

    # Sky: makeSkyImage gives rate x pixel area from the WCS; tree rings and rho_sky on top.
    xx, yy = _pixel_grid(d.shape)
    sky_img = galsim.ImageF(nx, ny, wcs=gs_wcs)
    gs_wcs.makeSkyImage(sky_img, survey.sky_rate(visit) * v.exptime)
    sky = sky_img.array.astype(np.float64)
    if camera.config.tree_rings:
        sky *= camera.tree_ring(detector, xx, yy)
    if camera.is_chromatic:
        sky *= camera.rho(detector, xx, yy, "sky", band)
    if any(v.sky_gradient) or survey.config.halo_fraction > 0:
        xi_img, eta_img = camera.tangent_plane(detector, xx, yy, v.rotation_deg)
    if any(v.sky_gradient):
        sky *= survey.sky_factor(visit, xi_img, eta_img)
    if survey.config.halo_fraction > 0:
        sky += _halo_electrons(camera, survey, visit, detector, xx, yy, xi_img, eta_img, sky_img.array)
    response = camera.qe(detector) * camera.illumination_sky(detector, xx, yy)
    electrons = response * (stars_img.array + sky)

    if camera.config.n_amplifiers > 1:
        raw, cards = amplifier_raw(camera, d, electrons, noise_seed(seed, visit, detector, 1))
        for key, value in cards.items():
            header[key] = value
    else:
        adu = galsim.ImageF(electrons / d.gain)
        adu.addNoise(galsim.CCDNoise(galsim.BaseDeviate(noise_seed(seed, visit, detector, 1)),
                                     gain=d.gain, read_noise=d.read_noise))
        raw = adu.array + np.float32(d.bias)
        np.minimum(raw, np.float32(d.saturation), out=raw)

    inside = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(y).astype(int), 0, ny - 1)
    peak_e = electrons[iy, ix] + 0.0
    area = camera.pixel_area(detector, x, y)
    area_wcs = camera.pixel_area(detector, x, y, tree_rings=False)
    sflat = camera.star_flat(detector, x, y, band, "fiducial")
    if camera.is_chromatic:
        own = np.empty_like(x)
        for name in np.unique(sel["template"]):
            m = sel["template"] == name
            own[m] = camera.star_flat(detector, x[m], y[m], band, str(name))
    else:
        own = sflat
    base = sel["flux"] * survey.electrons_per_njy_s * v.exptime * trans
    truth = {
        "visit": np.full(x.size, v.visit, dtype=np.int64),
        "detector": np.full(x.size, d.id, dtype=np.int64),
        "star": sel["star"].astype(np.int64),
        "x": x, "y": y,
        "ra": sel["ra"], "dec": sel["dec"],
        "template": sel["template"].astype(str),
        "flux_njy": sel["flux"],
        "xi": xi, "eta": eta,
        "transmission": trans,
        "rho": rho,
        "expected_e": expected,
        "drawn_e": drawn,
        "on_image_fraction": on_image,
        "qe": camera.qe_smooth(detector, x, y),
        "illum_sky": camera.illumination_sky(detector, x, y),
        "illum_dome": camera.illumination_dome(detector, x, y),
        "star_flat": own,
        "star_flat_fiducial": sflat,
        "pixel_area": area,
        "pixel_area_wcs": area_wcs,
        "tree_ring": area / area_wcs,
        "instflux_sb_expected": base * own / area,
        "instflux_fluence_expected": base * own * area_wcs / area,
        "saturated": peak_e >= (d.saturation - d.bias) * d.gain * 0.999,
    }
    keep = inside
    return RenderedDetector(visit=v.visit, detector=d.id, image=raw.astype(np.float32), header=header,
                            stars={k: np.asarray(val)[keep] for k, val in truth.items()})


def amplifier_parameters(camera: Camera, d) -> list[dict[str, float]]:
    """Gain (e⁻/ADU), read noise (e⁻), bias (ADU) and saturation (ADU) of each amplifier of a
    detector: spread deterministically about the detector's own values (±6 % in gain, +25 ADU
    of bias and +5 % of read noise per amplifier), so amplifiers visibly differ."""
    n = camera.config.n_amplifiers
    out = []
    for k in range(n):
        gain = d.gain * (1.0 + 0.04 * (k - (n - 1) / 2))
        bias = d.bias + 25.0 * k
        out.append({"gain": gain, "read_noise": d.read_noise * (1.0 + 0.05 * k), "bias": bias,
                    "saturation": float(min(bias + camera.config.full_well_e / gain, 65535.0))})
    return out


def amplifier_raw(camera: Camera, d, electrons: np.ndarray, seed: int):
    """A multi-amplifier raw frame of ``electrons`` and its per-amplifier header cards.

    Poisson noise on the electrons, then per amplifier: its columns (the last of two amplifiers
    reads right to left, as DECam's B does), ``/ gain + bias`` with a bias that drifts by 0.02
    ADU per row (common to data and overscan, as an overscan corrects it), Gaussian read noise,
    clipping at its saturation, and ``overscan_px`` overscan columns after its data section.
    """
    n = camera.config.n_amplifiers
    over = camera.config.overscan_px
    ny, nx = electrons.shape
    if nx % n:
        raise InputError(f"detector width {nx} is not a multiple of the {n} amplifiers")
    w = nx // n
    rng = np.random.default_rng(seed)
    noisy = rng.poisson(np.maximum(electrons, 0.0)).astype(np.float64)
    drift = 0.02 * np.arange(ny, dtype=np.float64)[:, None]
    raw = np.empty((ny, n * (w + over)), dtype=np.float32)
    cards: dict[str, object] = {}
    for k, amp in enumerate(amplifier_parameters(camera, d)):
        L = "ABCDEFGH"[k]
        flip = n == 2 and k == 1
        data = noisy[:, k * w:(k + 1) * w]
        if flip:
            data = data[:, ::-1]
        sigma = amp["read_noise"] / amp["gain"]
        x0 = k * (w + over)
        adu = data / amp["gain"] + amp["bias"] + drift + rng.normal(0.0, sigma, data.shape)
        bias_cols = amp["bias"] + drift + rng.normal(0.0, sigma, (ny, over))
        raw[:, x0:x0 + w] = np.minimum(adu, amp["saturation"])
        raw[:, x0 + w:x0 + w + over] = bias_cols
        ccd = f"[{(k + 1) * w}:{k * w + 1},1:{ny}]" if flip else f"[{k * w + 1}:{(k + 1) * w},1:{ny}]"
        cards.update({
            f"DATASEC{L}": f"[{x0 + 1}:{x0 + w},1:{ny}]",
            f"BIASSEC{L}": f"[{x0 + w + 1}:{x0 + w + over},1:{ny}]",
            f"CCDSEC{L}": ccd,
            f"GAIN{L}": (round(amp["gain"], 6), f"[e-/ADU] gain of amplifier {L}"),
            f"RDNOISE{L}": (round(amp["read_noise"], 6), f"[e-] read noise of amplifier {L}"),
            f"SATURAT{L}": (round(amp["saturation"], 3), f"[ADU] saturation of amplifier {L}"),
        })
    return raw, cards


def _halo_electrons(camera: Camera, survey: Survey, visit: int, detector: int, xx, yy, xi, eta,
                    sky_rate_area: np.ndarray) -> np.ndarray:
    """Electrons of the halo per pixel before QE and illumination: an astronomical source, so
    ``t K T_v(xi, eta) halo_sb(ra, dec) A TR rho_fiducial`` (its calibrated surface brightness
    is then ``halo_sb`` exactly, like a star's flux). ``sky_rate_area`` is the sky image GalSim
    drew, ``rate t A_wcs``, from which the WCS pixel area is taken."""
    v = survey.visit(visit)
    area = sky_rate_area.astype(np.float64) / (survey.sky_rate(visit) * v.exptime)
    if camera.config.tree_rings:
        area = area * camera.tree_ring(detector, xx, yy)
    ra, dec = camera.pixel_to_sky(detector, xx, yy, v.ra, v.dec, v.rotation_deg)
    halo = (survey.halo_sb(ra, dec) * survey.electrons_per_njy_s * v.exptime
            * survey.transmission(visit, xi, eta) * area)
    if camera.is_chromatic:
        halo *= camera.rho(detector, xx, yy, "fiducial", survey.band)
    return halo


def lamp_level(camera: Camera, flat_level_e: float) -> float:
    """Lamp level L (electrons per arcsec^2 at unit response) giving ``flat_level_e`` per on-axis pixel."""
    return flat_level_e / camera.config.pixel_scale_arcsec**2


def _flat_wcs(camera: Camera, detector: int) -> galsim.GSFitsWCS:
    # Any pointing: the pixel area does not depend on where the telescope points.
    return galsim.GSFitsWCS(header=camera.detector_wcs(detector, 0.0, 0.0, 0.0))


def dome_flat(camera: Camera, detector: int, band: str, flat_level_e: float = 1.0e6,
              seed: int = 1) -> tuple[np.ndarray, fits.Header]:
    """A master dome flat in electrons (bias-subtracted, gain-corrected, high S/N).

    D = L A TR Q I_dome rho_lamp with Poisson noise, L the ``LAMPLVL`` keyword, so that D / L is
    the exact response to a uniform surface brightness (arcsec^2 x relative response).

    Returns
    -------
    image : ndarray float32 [ny, nx]
    header : astropy Header
    """
    d = camera.detector(detector)
    ny, nx = d.shape
    level = lamp_level(camera, flat_level_e)
    wcs = _flat_wcs(camera, detector)
    img = galsim.ImageF(nx, ny, wcs=wcs)
    wcs.makeSkyImage(img, level)
    xx, yy = _pixel_grid(d.shape)
    resp = camera.qe(detector) * camera.illumination_dome(detector, xx, yy)
    if camera.config.tree_rings:
        resp *= camera.tree_ring(detector, xx, yy)
    if camera.is_chromatic:
        resp *= camera.rho(detector, xx, yy, "lamp", band)
    out = galsim.ImageD(img.array.astype(np.float64) * resp)
    out.addNoise(galsim.PoissonNoise(galsim.BaseDeviate(noise_seed(seed, detector, 2))))
    h = fits.Header()
    h["EXTNAME"] = "FLAT"
    h["IMAGETYP"] = "flat"
    h["DETECTOR"] = (d.id, "detector number")
    h["FILTER"] = (band, "LSST bandpass shipped with GalSim")
    h["BUNIT"] = "electron"
    h["LAMPLVL"] = (level, "[electron/arcsec2] lamp level at unit response")
    h["FLATLVL"] = (flat_level_e, "[electron] nominal on-axis pixel level")
    h["COMMENT"] = "Master dome flat: bias-subtracted, gain applied, D = LAMPLVL*A*QE*I_dome*rho_lamp"
    return out.array.astype(np.float32), h


def mono_wavelengths(band: str, step_nm: float = 5.0, threshold: float = 0.005,
                     blue_extension_nm: float = 0.0) -> np.ndarray:
    """Wavelengths (nm) of the monochromatic flats: evenly spaced by about ``step_nm`` from the
    first to the last wavelength where T0 > threshold x peak, the blue end moved down by
    ``blue_extension_nm`` (a filter edge that shifts bluewards across the field)."""
    w = spectra.WAVELENGTH_NM
    t0 = spectra.throughput(band)
    inside = w[t0 > threshold * t0.max()]
    lo, hi = inside.min() - float(blue_extension_nm), inside.max()
    # Spacing as close to step_nm as fits; without an extension both ends are inside the band.
    n = max(int(round((hi - lo) / step_nm)) + 1, 2)
    return np.linspace(lo, hi, n)


def monochromatic_flats(camera: Camera, detector: int, band: str, step_nm: float = 5.0,
                        flat_level_e: float = 1.0e6, seed: int = 1,
                        response: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monochromatic flats of a detector (a monochromator scan), as relative response / T0 or,
    with ``response=True``, as the response itself over a scan that reaches the shifted edge.

    Default: cube[k] = L A TR Q I_dome T0(lambda_k + shift t^2) q_d(lambda_k) / T0(lambda_k) with
    Poisson noise, so that ``ChromaticFlat(wavelength, cube, T0).flatten(sed)`` is
    L A TR Q I_dome rho_sed. The scan covers the nominal band only, so where the filter edge has
    moved bluewards (the outer detectors of a chromatic camera) it misses part of the response.

    ``response=True``: cube[k] = L A TR Q I_dome T0(lambda_k + shift t^2) q_d(lambda_k), the scan
    extended bluewards by this detector's largest shift; use it as
    ``ChromaticFlat(wavelength, cube, T0, cube_is_response=True)``.

    Returns
    -------
    wavelength_nm : ndarray (n,)
    throughput : ndarray (n,)
        T0 at those wavelengths (the nominal total throughput).
    cube : ndarray float32 (n, ny, nx)
    """
    d = camera.detector(detector)
    ny, nx = d.shape
    xx, yy = _pixel_grid(d.shape)
    t2 = camera.field_t(detector, xx, yy) ** 2
    extension = camera.config.filter_shift_nm_edge * float(t2.max()) if response else 0.0
    wl = mono_wavelengths(band, step_nm, blue_extension_nm=extension)
    t0_full = spectra.throughput(band)
    w = spectra.WAVELENGTH_NM
    t0 = np.interp(wl, w, t0_full)
    level = lamp_level(camera, flat_level_e)
    wcs = _flat_wcs(camera, detector)
    img = galsim.ImageF(nx, ny, wcs=wcs)
    wcs.makeSkyImage(img, level)
    base = img.array.astype(np.float64) * camera.qe(detector) * camera.illumination_dome(detector, xx, yy)
    if camera.config.tree_rings:
        base *= camera.tree_ring(detector, xx, yy)
    centre = float(np.sum(w * t0_full) / np.sum(t0_full))
    cube = np.empty((wl.size, ny, nx), dtype=np.float32)
    dev = galsim.BaseDeviate(noise_seed(seed, detector, 3))
    for k, lam in enumerate(wl):
        shifted = np.interp(lam + camera.config.filter_shift_nm_edge * t2, w, t0_full)
        q = 1 + camera.detector(detector).qe_slope * (lam - centre) / 100.0
        frame = galsim.ImageD(base * shifted * q if response else base * shifted * q / t0[k])
        frame.addNoise(galsim.PoissonNoise(dev))
        cube[k] = frame.array
    return wl, t0, cube
