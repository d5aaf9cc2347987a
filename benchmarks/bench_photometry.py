"""Benchmark: aperture photometry of 10⁴ sources on a 4k×4k fluence image against sep and photutils.

Targets (issue 15): faster than sep's exact mode on float32 and float64 images, and angular
(Jacobian-ellipse) apertures no slower than sep's ellipses given the same (a, b, θ); the sums
agree to 1e-10 (sep rounds float64 pixels to float32, so float64 is checked against photutils).
photocalib and sep run alternately, best of 7 rounds each; photutils (issue 4: ≥ 5× faster) once.
Run: ``.venv/bin/python benchmarks/bench_photometry.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _timing import best_time, best_times_interleaved  # noqa: E402

import photocalib as pc  # noqa: E402
from photocalib.astrometry.synthetic import hsc_like_sip_header  # noqa: E402

N = 4096
N_SOURCES = 10_000
RADIUS = 8.0  # pixels
RADIUS_ARCSEC = 1.5


def main() -> None:
    import sep
    from photutils.aperture import CircularAperture, EllipticalAperture
    from photutils.aperture import aperture_photometry as pu_photometry

    from photocalib.measure import aperture_photometry, ellipse_from_jacobian

    rng = np.random.default_rng(9)
    wcs = pc.SkyWcs.from_header(hsc_like_sip_header(nx=N, ny=N))
    x = rng.uniform(20, N - 20, N_SOURCES)
    y = rng.uniform(20, N - 20, N_SOURCES)
    image64 = rng.normal(100.0, 10.0, (N, N))
    a, b, theta = ellipse_from_jacobian(wcs.jacobian(x, y), RADIUS_ARCSEC)  # sep gets these free
    rows = []  # (name, wall, cpu, peer row index or None)
    checks = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        image = image64.astype(dtype)
        variance = np.full((N, N), 100.0, dtype=dtype)
        exp = pc.Exposure(image, variance=variance, wcs=wcs, kind="FLUENCE")
        aperture_photometry(exp, x[:10], y[:10], radius=RADIUS)  # JIT warm-up
        aperture_photometry(exp, x[:10], y[:10], radius_arcsec=RADIUS_ARCSEC)
        t = best_times_interleaved({
            "ours": lambda exp=exp: aperture_photometry(exp, x, y, radius=RADIUS, flag_blends=False),
            "sep": lambda image=image, variance=variance: sep.sum_circle(image, x, y, RADIUS, var=variance, subpix=0),
            "ours_ang": lambda exp=exp: aperture_photometry(exp, x, y, radius_arcsec=RADIUS_ARCSEC, flag_blends=False),
            "sep_ell": lambda image=image, variance=variance: sep.sum_ellipse(image, x, y, a, b, theta, 1.0,
                                                                             var=variance, subpix=0),
        }, repeat=7)
        k = len(rows)
        rows.append((f"photocalib circular r={RADIUS:g} px, {name}", *t["ours"][:2], k + 1))
        rows.append((f"sep.sum_circle exact, {name}", *t["sep"][:2], None))
        rows.append((f"photocalib angular {RADIUS_ARCSEC}\" (Jacobian ellipse), {name}", *t["ours_ang"][:2], k + 3))
        rows.append((f"sep.sum_ellipse exact, same (a, b, theta), {name}", *t["sep_ell"][:2], None))
        ours, ang = t["ours"][2], t["ours_ang"][2]
        error = np.sqrt(variance)  # photutils takes sigma; computed outside its timing
        w, c, ref = best_time(
            lambda image=image, error=error: pu_photometry(
                image, CircularAperture(np.column_stack([x, y]), r=RADIUS), error=error, method="exact"),
            repeat=1,
        )
        rows.append((f"photutils CircularAperture exact, {name}", w, c, None))
        rel = np.abs(np.asarray(ours["instflux"]) / np.asarray(ref["aperture_sum"]) - 1).max()
        err_rel = np.abs(np.asarray(ours["instflux_err"]) / np.asarray(ref["aperture_sum_err"]) - 1).max()
        checks.append(f"circular {name} vs photutils: max relative difference of sums {rel:.1e}, of errors {err_rel:.1e}")
        for label, ours_t, peer in (("circular", ours, t["sep"][2]), ("elliptical", ang, t["sep_ell"][2])):
            rel = np.abs(np.asarray(ours_t["instflux"]) / peer[0] - 1).max()
            err_rel = np.abs(np.asarray(ours_t["instflux_err"]) / peer[1] - 1).max()
            note = "" if dtype == np.float32 else " (sep rounds float64 pixels to float32)"
            checks.append(f"{label} {name} vs sep: max relative difference of sums {rel:.1e}, "
                          f"of errors {err_rel:.1e}{note}")
        if dtype == np.float32:
            # photutils needs one EllipticalAperture per source shape: time 200 and scale to 10^4.
            m = 200

            def photutils_ellipses(image=image, m=m):
                return [pu_photometry(image, EllipticalAperture((x[i], y[i]), a[i], b[i], theta=theta[i]),
                                      method="exact")["aperture_sum"][0] for i in range(m)]

            w, c, ell = best_time(photutils_ellipses, repeat=1)
            rows.append((f"photutils EllipticalAperture exact (x{N_SOURCES // m} from {m})",
                         w * N_SOURCES / m, c * N_SOURCES / m, None))
            ell_rel = np.abs(np.asarray(ang["instflux"][:m]) / np.asarray(ell) - 1).max()
            checks.append(f"elliptical float32 vs photutils: max relative difference over {m} sources {ell_rel:.1e}")

    print(f"aperture photometry of {N_SOURCES} sources on a {N}x{N} fluence image with a variance plane, "
          "one core; best of 7 alternating rounds")
    print(f"{'method':58s} {'wall s':>8s} {'cpu s':>8s} {'peer/ours wall':>15s} {'cpu':>6s}")
    for name, w, c, peer in rows:
        ratio = f"{rows[peer][1] / w:15.2f} {rows[peer][2] / c:6.2f}" if peer is not None else ""
        print(f"{name:58s} {w:8.3f} {c:8.3f} {ratio}")
    for line in checks:
        print(line)
    print("peer/ours > 1: photocalib is faster (target >= 1.0 against sep on both dtypes, circles and ellipses)")


if __name__ == "__main__":
    main()
