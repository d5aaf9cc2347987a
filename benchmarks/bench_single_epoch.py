"""Benchmark: one 4k×4k detector with ~2000 stars from raw ADU to a calibrated catalog, one core.

Target (issue 4): ≤ 3 s. Prints the time of each step and the total, in one table; where sep does
the same job on the same pixels (background, detection, elliptical aperture sums) its time and the
ratio are printed beside the step (best of 3 alternating rounds for those steps).
Run: ``.venv/bin/python benchmarks/bench_single_epoch.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from scipy.special import ndtr  # noqa: E402

import photocalib as pc  # noqa: E402
from photocalib.astrometry.synthetic import hsc_like_sip_header  # noqa: E402

N = 4096
N_STARS = 2000
TARGET_S = 3.0


def make_detector(seed: int = 5, n: int = N, n_stars: int = N_STARS):
    """A raw HDU, its dome flat and a reference catalog, rendered analytically (no GalSim)."""
    rng = np.random.default_rng(seed)
    header = hsc_like_sip_header(nx=n, ny=n)
    wcs = pc.SkyWcs.from_header(header)
    area = wcs.pixel_area_field(pc.Box(0, 0, n, n)).fill()
    yy, xx = np.mgrid[0:n, 0:n]
    response = (0.95 + 0.05 * xx / n) * (1 + 0.01 * rng.standard_normal((n, n)))
    lamp = 3.0e7
    flat = (lamp * area * response).astype(np.float32)
    # Stars: fluence per star in electrons, Gaussian PSF of 0.7" FWHM, pixel-integrated.
    x = rng.uniform(20, n - 20, n_stars)
    y = rng.uniform(20, n - 20, n_stars)
    mag = rng.uniform(16.0, 22.0, n_stars)
    flux_njy = 10 ** (-0.4 * (mag - 31.4))
    calib = 0.5  # nJy per electron
    electrons = flux_njy / calib
    sigma = 0.7 / 2.355 / np.sqrt(wcs.pixel_area(x, y))
    half = 10
    off = np.arange(-half, half + 1)
    ix = np.round(x).astype(int)[:, None] + off
    iy = np.round(y).astype(int)[:, None] + off
    gx = ndtr((ix + 0.5 - x[:, None]) / sigma[:, None]) - ndtr((ix - 0.5 - x[:, None]) / sigma[:, None])
    gy = ndtr((iy + 0.5 - y[:, None]) / sigma[:, None]) - ndtr((iy - 0.5 - y[:, None]) / sigma[:, None])
    stamps = electrons[:, None, None] * gy[:, :, None] * gx[:, None, :]
    image = np.zeros((n, n))
    np.add.at(image, (np.broadcast_to(iy[:, :, None], stamps.shape), np.broadcast_to(ix[:, None, :], stamps.shape)), stamps)
    sky_sb = 800.0 / 0.028  # electrons per arcsec²
    e = (image + sky_sb * area) * response
    gain, rn, bias = 1.6, 4.5, 1000.0
    raw = (rng.poisson(np.clip(e, 0, None)) + rng.normal(0, rn, e.shape)) / gain + bias
    header.update(VISIT=1, DETECTOR=0, GAIN=gain, RDNOISE=rn, BIAS=bias, SATURATE=65535.0, EXTNAME="DET000")
    flat_header = fits.Header({"LAMPLVL": lamp})
    ra, dec = wcs.pixel_to_sky(x, y)
    bright = mag < 20.5
    ref = Table({"ra": ra[bright], "dec": dec[bright], "flux": flux_njy[bright], "flux_err": 0.003 * flux_njy[bright]})
    return fits.ImageHDU(raw.astype(np.float32), header), (flat, flat_header), ref


def run_steps(hdu, flat, ref):
    """Each step of the chain, timed; returns (rows, catalog)."""
    from photocalib import background, measure
    from photocalib.fit import fit_single, match_reference, source_catalog
    from photocalib.isr import DomeFlat, isr_from_hdu

    rows = []

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        c0 = time.process_time()
        out = fn(*args, **kwargs)
        rows.append((name, time.perf_counter() - t0, time.process_time() - c0))
        return out

    dome = timed("prepare dome flat (once per detector)", DomeFlat.from_array, flat[0], header=flat[1])
    t_start = time.perf_counter()
    c_start = time.process_time()
    sb = timed("isr (bias, gain, masks, variance, flat)", isr_from_hdu, hdu, dome)
    bg = timed("background on SB", background.estimate, sb)
    fl = timed("subtract + to_fluence", lambda: background.subtract(sb, bg).to_fluence())
    found = timed("detect + centroids (fluence)", measure.detect, fl, 10.0)
    phot = timed("aperture photometry (2\" Jacobian ellipses)", measure.aperture_photometry, fl, found["x"], found["y"], radius_arcsec=2.0)

    def calibrate():
        ra, dec = fl.wcs.pixel_to_sky(np.asarray(phot["x"]), np.asarray(phot["y"]))
        phot["ra"], phot["dec"] = ra, dec
        m = match_reference(phot, ref, 1.0)
        snr = np.asarray(m["instflux"]) / np.asarray(m["instflux_err"])
        good = (np.asarray(m["ref_index"]) >= 0) & (np.asarray(m["flags"]) == 0) & (snr > 50)
        res = fit_single(m[good], mode="fluence", bbox=fl.bbox)
        return source_catalog(m, res.photo_calib, fl.wcs), res

    cat, res = timed("match + fit + calibrated catalog", calibrate)
    total = (time.perf_counter() - t_start, time.process_time() - c_start)
    return rows, total, cat, res, {"sb": sb, "fl": fl, "phot": phot}


def sep_peers(parts) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """photocalib and sep doing the same step on the same pixels, alternating, best of 3.

    Returns step name -> ((ours wall, cpu), (sep wall, cpu)).
    """
    import sep
    from _timing import best_times_interleaved

    from photocalib import background, measure

    sb, fl, phot = parts["sb"], parts["fl"], parts["phot"]
    sb_img = np.array(sb.image)  # sep wants writeable native arrays
    fl_img = np.array(fl.image)
    fl_err = np.sqrt(np.asarray(fl.variance))
    fl_var = np.array(fl.variance)
    x, y = np.asarray(phot["x"]), np.asarray(phot["y"])
    a, b, th = (np.asarray(phot[k]) for k in ("a", "b", "theta"))
    pairs = {
        "background on SB": (lambda: background.estimate(sb).fill(dtype=np.float32),
                             lambda: sep.Background(sb_img, bw=128, bh=128).back()),
        "detect + centroids (fluence)": (lambda: measure.detect(fl, 10.0),
                                         lambda: sep.extract(fl_img, 10.0, err=fl_err, minarea=5)),
        "aperture photometry (2\" Jacobian ellipses)": (
            lambda: measure.aperture_photometry(fl, x, y, radius_arcsec=2.0),
            lambda: sep.sum_ellipse(fl_img, x, y, a, b, th, 1.0, var=fl_var, subpix=0)),
    }
    out = {}
    for name, (ours, theirs) in pairs.items():
        t = best_times_interleaved({"ours": ours, "sep": theirs}, repeat=3)
        out[name] = (t["ours"][:2], t["sep"][:2])
    return out


def main() -> None:
    hdu, flat, ref = make_detector()
    # Warm the JIT and the caches that belong to process start-up, not to a detector.
    small_hdu, small_flat, small_ref = make_detector(seed=1, n=512, n_stars=60)
    run_steps(small_hdu, small_flat, small_ref)
    rows, total, cat, res, parts = run_steps(hdu, flat, ref)
    peers = sep_peers(parts)
    print(f"single-epoch processing, {N}x{N} detector, {N_STARS} stars, one core")
    # CPU time is shown beside wall time: on a shared machine the wall time includes waiting.
    print(f"{'step':50s} {'wall s':>8s} {'cpu s':>8s}   {'sep peer (same step, best of 3 alternating)'}")
    for name, dt, ct in rows:
        extra = ""
        if name in peers:
            (ow, oc), (sw, sc) = peers[name]
            extra = (f"   ours {ow:.3f}/{oc:.3f} s, sep {sw:.3f}/{sc:.3f} s (wall/cpu): "
                     f"sep/ours {sw / ow:.2f} wall, {sc / oc:.2f} cpu")
        print(f"{name:50s} {dt:8.3f} {ct:8.3f}{extra}")
    print(f"{'total raw -> calibrated catalog (excl. flat prep)':50s} {total[0]:8.3f} {total[1]:8.3f}")
    print(f"{'target':50s} {TARGET_S:8.3f} {TARGET_S:8.3f}")
    print(f"{'ratio target / measured':50s} {TARGET_S / total[0]:8.2f} {TARGET_S / total[1]:8.2f}")
    print(f"sources {len(cat)}, calibration stars {res.n_used}, fit rms {1000 * res.rms_mag:.1f} mmag, "
          f"calibration {res.photo_calib.mean():.4f} nJy/e- (truth 0.5 x 2\" aperture EE)")


if __name__ == "__main__":
    main()
