r"""A camera and survey simulator with known truth, rendered through GalSim.

Layer 7: the only part of photocalib that imports GalSim; a client of the library, not a part of it.

Quick start
-----------
>>> from photocalib import sim
>>> res = sim.simulate("out", preset="hsc-like", n_visits=10,            # doctest: +SKIP
...                    detector_shape=(512, 512), n_detectors=16, seed=1)
>>> res = sim.testing.small_survey(tmp_dir)      # a tiny, fast run for tests  # doctest: +SKIP
>>> cam = sim.Camera.preset("hsc-like", detector_shape=(512, 512), n_detectors=16)
>>> header = cam.detector_wcs(3, 150.0, 2.0, 30.0)  # astropy Header, RA---TAN-SIP

The command line is ``photocalib simulate --preset hsc-like --visits 10 --out DIR``.

For survey-sized joint-calibration data (10⁵–10⁸ star observations, no pixels, no GalSim),
:mod:`photocalib.sim.large_survey` writes observations partitioned by sky cell as Parquet with
their exact truth: ``python -m photocalib.sim.large_survey DIR --visits 10000 --workers 2``.

Public API
----------
``Camera.preset(name, detector_shape=None, n_detectors=None, tree_rings=False, pixel_scale_arcsec=None, seed=1, **config)``
    Presets ``"hsc-like"``, ``"megacam-like"``, ``"decam-like"``. ``detector_shape`` is
    ``(ny, nx)``. The detectors nearest the axis on a grid are used (a circular layout, or a
    square one for MegaCam), and the radial distortion is scaled to the field they cover, so a
    "miniature" camera keeps the published pixel-area change at its edge: HSC -12 % at the
    farthest detector corner, MegaCam -3 % at the half-width and -5 % at the corner, DECam -1 %.
    Methods (``detector`` an int; x, y 0-based pixel arrays, any broadcastable shapes):

    - ``detector_wcs(detector, pointing_ra, pointing_dec, rotation_deg)`` -> FITS TAN-SIP
      ``Header`` (tangent point at the optical axis; forward SIP exact, residual < 1e-6 mas;
      inverse AP/BP fitted to order 7 over the detector, < 1e-5 pixel).
    - ``pixel_to_sky``/``sky_to_pixel(detector, ..., pointing_ra, pointing_dec, rotation_deg)``:
      the true model.
    - ``pixel_area(detector, x, y, tree_rings=True)``: true solid angle per pixel, arcsec^2
      (``tree_rings=False``: the smooth area the WCS describes); ``tree_ring(detector, x, y)``.
    - ``qe(detector)`` full map / ``qe(detector, x, y)``; ``qe_smooth``; ``qe_pixel_noise``.
    - ``illumination_sky``, ``illumination_dome``, ``illumination_ratio`` (= I_sky / I_dome).
    - ``rho(detector, x, y, sed, band)``: chromatic response (1 for achromatic cameras);
      ``star_flat(detector, x, y, band="r", sed="fiducial")``; ``response_curve``.
    - ``to_dict()`` / ``Camera.from_dict()`` (JSON), ``detectors`` (gain, read noise, bias,
      saturation, QE parameters of each).
``make_survey(camera, n_visits=10, seed=1, band="r", **SurveyConfig fields)`` -> ``Survey``
    Dithered (within half the field radius), rotated visits; per visit a ``Visit`` (pointing,
    rotation, MJD, exposure time, airmass, seeing FWHM, extinction k X, grey cloud term,
    optional linear grey gradient, sky brightness). ``survey.transmission(visit, xi, eta)``,
    ``survey.transmission_at_pixel(visit, detector, x, y)``, ``survey.sky_rate(visit)``,
    ``survey.electrons_per_njy_s`` (K below), ``survey.visits_table()``.
``make_stars(ra, dec, radius_deg, density, mag_range, slope, band, seed)`` -> ``StarCatalog``
    Power-law counts dN/dm ~ 10^(0.3 m); SEDs: GalSim's Vega and blackbodies 3400-7200 K;
    fluxes (nJy) in ``u g r i z y`` through GalSim's LSST bandpasses. ``make_refcat`` gives the
    reference catalog (PS1-like errors: 3 mmag floor, 20 mmag at m = 20).
``simulate(out_dir, preset, n_visits, ..., client=None)`` -> ``SimulationResult``
    Renders each visit (and writes each flat) as one task of a :mod:`photocalib.execution`
    executor (a ``dask.distributed.Client`` if given, otherwise 2 threads of this process)
    and writes the layout below.
    ``SimulationResult`` has ``camera``, ``survey``, ``stars``, ``refcat``, ``observations``
    (truth table), the paths, ``read_raw``, ``read_dome_flat``, ``header``, and
    ``truth_map(detector, name)``, ``SimulationResult.load(out_dir)``.

``testing.small_survey(tmp_dir, **overrides)``: a few-second run for other layers' tests.

On disk
-------
``raw/visit-XXXXXX.fits``
    MEF: primary HDU (visit keywords) + one float32 image HDU per detector, ``EXTNAME =
    DETddd``, with the WCS and ``VISIT DETECTOR FILTER EXPTIME MJD-OBS AIRMASS GAIN RDNOISE
    BIAS SATURATE BUNIT=adu BORE-RA BORE-DEC ROTANG``.
``flats/dome-<band>-ddd.fits``
    Master dome flat in electrons (bias-subtracted, gain applied), keyword ``LAMPLVL``.
``flats/mono-<band>-ddd.fits``
    (chromatic cameras) cube [n_lambda, ny, nx] of the response ``T(lambda; x, y) x flat``
    (``CUBETYPE = 'RESPONSE'``), scanned bluewards far enough to cover the shifted filter edge,
    + table ``WAVELENGTH`` (wavelength_nm, throughput = T0): the input of
    ``photocalib.isr.ChromaticFlat(wl, cube, T0, cube_is_response=True)``.
``refcat.parquet``
    ``star``/``id``, ``ra``, ``dec``, ``<b>_flux``, ``<b>_fluxErr`` (nJy), ``flux``,
    ``flux_err`` (the survey band).
``truth/``
    ``stars.parquet`` (true fluxes per band, nJy; template), ``visits.parquet`` (pointing,
    conditions, grey terms, sky rate, transmission at the centre), ``observations.parquet``
    (every star on every detector, columns below), ``maps-ddd.fits`` (AREA, AREA_WCS, QE,
    ILLUM_SKY, ILLUM_DOME, STARFLAT, and RHO_SKY/RHO_LAMP/RHO_FID when chromatic),
    ``config.json`` (camera, survey, stars; no pickle anywhere).

Forward model (exact)
---------------------
For visit v (exposure time t, transmission T_v), detector d, pixel (x, y), band b:

- A(x, y) = A_wcs(x, y) TR(x, y): true pixel solid angle (arcsec^2); A_wcs is what the WCS
  header gives, TR the tree-ring factor (1 unless ``tree_rings``).
- Q(x, y) = qe_smooth(x, y) (1 + sigma n_xy): achromatic QE with pixel-to-pixel noise, relative
  to the nominal LSST throughput T0 (which already contains a CCD QE), so about 0.9 +- a few %.
- I_sky, I_dome: illumination of the focal plane by the sky (and stars) and by the dome screen.
- rho_S(x, y) = int N_S T0(lambda + shift t^2) q_d(lambda) dlambda / int N_S T0 dlambda for a
  photon spectrum N_S: 1 exactly for hsc-like and decam-like (achromatic), not for megacam-like.
- K = ``survey.electrons_per_njy_s``: e-/s per nJy (AB, photon-weighted through the nominal LSST
  bandpass T0, telescope area of the preset).
- T_v(xi, eta) = 10^(-0.4 (k X_v + grey_v + g_x xi / R + g_y eta / R)), (xi, eta) the
  tangent-plane position about the pointing, R the field radius on the sky.

Expected electrons in a pixel::

    E(x, y) = Q I_sky [ sum_i F_i K t T_v(xi_i, eta_i) rho_i P_i(x, y) + t S_v g_v(xi, eta) A(x, y) rho_sky(x, y)
                        + t K T_v(xi, eta) H(ra, dec) A(x, y) rho_fid(x, y) ]

with F_i the star's true flux (nJy, band b), P_i its PSF (Moffat beta 3.5 or Kolmogorov of the
visit's FWHM) integrated over pixels by GalSim through the local WCS at the star, drawn on a
stamp of +-9 FWHM (Moffat: sum P_i >= 0.9999; the drawn total is ``drawn_e``), and S_v the sky rate
(e-/s/arcsec^2, ``survey.sky_rate``; the sky is drawn with ``makeSkyImage``, i.e. times A_wcs),
g_v = 1 + gx xi / R + gy eta / R the visit's sky gradient (``survey.sky_factor``; 1 unless
``sky_gradient_fraction``), and H an extended halo (``survey.halo_sb``, nJy/arcsec², exponential,
``halo_fraction`` of the dark sky at its peak; 0 unless asked for). On a dome-flattened fluence
image calibrated with the true ``nJy = instflux / (K t T_v SF)`` the halo is exactly H times the
pixel area and the sky (achromatic presets) ``S_v g_v / (K T_v)`` nJy/arcsec².
Raw: ``raw = bias + Poisson(E) / gain + N(0, read_noise / gain)`` (GalSim ``CCDNoise``), clipped
at ``SATURATE``; float32, not quantised.

Dome flat (electrons): ``D = L A Q I_dome rho_lamp`` (+ Poisson), L = ``LAMPLVL``.
A dome-flat-fielded surface-brightness image in e-/arcsec^2 is ``sb = (raw - bias) gain / (D / L)``.
Then, exactly up to noise:

- sky on ``sb``: ``t S_v (I_sky / I_dome) (rho_sky / rho_lamp)`` - uniform where the dome and
  sky illuminations agree (achromatic presets); on the fluence image ``sb x A_wcs`` it follows
  the area map;
- a star's pixel sum on ``sb``: ``F K t T_v SF_S / A`` (column ``instflux_sb_expected``);
- on the fluence image ``sb x A_wcs``: ``F K t T_v SF_S / TR`` (``instflux_fluence_expected``),

where the **star flat** SF_S = (I_sky / I_dome) (rho_S / rho_lamp) is
``camera.star_flat(d, x, y, band, sed)`` (``sed="fiducial"``, flat f_nu, for the STARFLAT map;
for achromatic presets SF = I_sky / I_dome for every star). A flat normalised differently
(e.g. to 1 at a reference pixel and divided by A_ref, as docs/design.md says) changes these by one
constant per band. So the true fluence-to-fluence calibration of a star on the dome-flattened,
tree-ring-corrected fluence image is ``nJy = instflux / (K t T_v SF_S)``.

``observations.parquet`` columns: visit, detector, star, x, y, ra, dec, template, flux_njy,
xi, eta, transmission, rho, expected_e (F K t T_v rho), drawn_e, on_image_fraction, qe
(smooth), illum_sky, illum_dome, star_flat (own SED), star_flat_fiducial, pixel_area (true),
pixel_area_wcs, tree_ring, instflux_sb_expected, instflux_fluence_expected, saturated.
"""

from __future__ import annotations

from . import large_survey, spectra, testing
from .camera import PRESETS, Camera, CameraConfig, Detector, sky_to_tangent, tangent_to_sky
from .render import dome_flat, monochromatic_flats, render_detector
from .runner import DEFAULT_DEMO, SimulationResult, simulate, truth_maps
from .stars import StarCatalog, make_refcat, make_stars
from .survey import Survey, SurveyConfig, Visit, make_survey

__all__ = [
    "PRESETS",
    "Camera",
    "CameraConfig",
    "Detector",
    "DEFAULT_DEMO",
    "SimulationResult",
    "StarCatalog",
    "Survey",
    "SurveyConfig",
    "Visit",
    "dome_flat",
    "large_survey",
    "make_refcat",
    "make_stars",
    "make_survey",
    "monochromatic_flats",
    "render_detector",
    "simulate",
    "sky_to_tangent",
    "spectra",
    "tangent_to_sky",
    "testing",
    "truth_maps",
]
