"""Speed of pixel-area maps on a 4096×4096 TAN-SIP order-5 detector (issue 2, "Speed").

Compares ``pixel_area_field(box).fill()`` with astropy central differences, one NumPy pass,
GalSim's ``makeSkyImage`` and ``Exposure.to_fluence`` with a cached area. Run:
``.venv/bin/python benchmarks/bench_pixel_area.py [--size N]``.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np
from astropy.wcs import WCS

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header

ARCSEC2_PER_DEG2 = 3600.0**2


def best_of(func, repeat: int) -> tuple[float, object]:
    """Minimum wall time of ``repeat`` calls, and the last result."""
    best = np.inf
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - t0)
    return best, result


def photocalib_fill(header, box):
    # A fresh SkyWcs each time, so construction and the order search are timed too.
    return pc.SkyWcs.from_header(header).pixel_area_field(box).fill()


def exact_area(wcs: pc.SkyWcs, box: pc.Box) -> np.ndarray:
    xs, ys = box.pixel_centers()
    out = np.empty(box.shape)
    for r0 in range(0, box.height, 256):
        out[r0:r0 + 256] = wcs.pixel_area(xs[None, :], ys[r0:r0 + 256, None])
    return out


def astropy_central_differences(header, box: pc.Box, rows: int = 256) -> np.ndarray:
    """What a user would write: four all_pix2world calls at x±½, y±½, then the spherical area.

    Done in blocks of rows so memory stays bounded; the work is the same as one big call.
    """
    w = WCS(header)
    xs, ys = box.pixel_centers()
    out = np.empty(box.shape)
    for r0 in range(0, box.height, rows):
        xx, yy = np.meshgrid(xs, ys[r0:r0 + rows])
        ra_xp, dec_xp = w.all_pix2world(xx + 0.5, yy, 0)
        ra_xm, dec_xm = w.all_pix2world(xx - 0.5, yy, 0)
        ra_yp, dec_yp = w.all_pix2world(xx, yy + 0.5, 0)
        ra_ym, dec_ym = w.all_pix2world(xx, yy - 0.5, 0)
        cosd = np.cos(np.deg2rad(0.25 * (dec_xp + dec_xm + dec_yp + dec_ym)))
        dra_x = ((ra_xp - ra_xm + 180.0) % 360.0 - 180.0) * cosd
        dra_y = ((ra_yp - ra_ym + 180.0) % 360.0 - 180.0) * cosd
        out[r0:r0 + rows] = np.abs(dra_x * (dec_yp - dec_ym) - dra_y * (dec_xp - dec_xm)) * ARCSEC2_PER_DEG2
    return out


def galsim_sky_image(header, box: pc.Box) -> np.ndarray:
    import galsim

    gs = galsim.GSFitsWCS(header=header)
    # GalSim images are 1-based: pixel (0, 0) here is GalSim's (1, 1).
    image = galsim.ImageD(galsim.BoundsI(box.x0 + 1, box.x0 + box.width, box.y0 + 1, box.y0 + box.height))
    gs.makeSkyImage(image, sky_level=1.0)
    return image.array


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a / b - 1.0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="detector side in pixels")
    parser.add_argument("--skip-slow", action="store_true", help="skip astropy and GalSim")
    args = parser.parse_args(argv)
    n = args.size
    header = hsc_like_sip_header(n, n)
    box = pc.Box(0, 0, n, n)
    wcs = pc.SkyWcs.from_header(header)
    rows = []

    t_exact, exact = best_of(lambda: exact_area(wcs, box), 1)
    print(f"detector {n}x{n}, TAN-SIP order 5 (HSC-like); area varies by "
          f"{exact.max() / exact.min() - 1:.2%}; {wcs!r}", flush=True)

    t_fill, area = best_of(lambda: photocalib_fill(header, box), 5)
    field = wcs.pixel_area_field(box)
    rows.append(("photocalib pixel_area_field(box).fill() incl. construction", t_fill, max_rel(area, exact)))
    out = np.empty(box.shape)
    field.fill(out=out)
    t_fill_out, _ = best_of(lambda: field.fill(out=out), 5)
    rows.append(("photocalib fill(out=preallocated), field built", t_fill_out, max_rel(out, exact)))
    rows.append(("photocalib exact analytic Jacobian, every pixel", t_exact, 0.0))

    img = np.ones(box.shape)
    res = np.empty(box.shape)
    t_np, _ = best_of(lambda: np.multiply(img, 1.0, out=res), 7)
    rows.append(("NumPy pass: np.multiply(img, 1.0, out=preallocated)", t_np, float("nan")))
    t_np_alloc, _ = best_of(lambda: img * 1.0, 5)
    rows.append(("NumPy pass with allocation: img * 1.0", t_np_alloc, float("nan")))

    t_astropy = t_galsim = float("nan")
    if not args.skip_slow:
        t_astropy, naive = best_of(lambda: astropy_central_differences(header, box), 1)
        rows.append(("astropy all_pix2world x4, central differences", t_astropy, max_rel(naive, exact)))
        del naive
        gc.collect()
        t_galsim, sky = best_of(lambda: galsim_sky_image(header, box), 1)
        rows.append(("GalSim GSFitsWCS.makeSkyImage", t_galsim, max_rel(sky, exact)))
        del sky
        gc.collect()

    # Peak memory of the fill (fresh WCS and field), traced through NumPy's allocator hooks.
    del area
    gc.collect()
    tracemalloc.start()
    filled = photocalib_fill(header, box)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mem_over = peak / filled.nbytes - 1.0
    del filled

    # to_fluence with the area cached (float32 image and variance, as on disk).
    exposure = pc.Exposure(np.ones(box.shape, np.float32), variance=np.ones(box.shape, np.float32),
                           wcs=wcs, kind=pc.ImageKind.SURFACE_BRIGHTNESS, unit="count/arcsec2")
    exposure.to_fluence()  # fills and caches A and A^2
    t_flu, _ = best_of(exposure.to_fluence, 5)
    plain = pc.Exposure(np.ones(box.shape, np.float32), wcs=wcs, kind=pc.ImageKind.SURFACE_BRIGHTNESS,
                        unit="count/arcsec2")
    plain.to_fluence()
    t_flu_img, _ = best_of(plain.to_fluence, 5)

    print()
    print(f"{'method':62s} {'time (s)':>9s} {'vs fill':>9s} {'Mpix/s':>9s} {'max rel err':>12s}")
    for name, t, err in rows:
        print(f"{name:62s} {t:9.4f} {t / t_fill:9.2f} {box.area / t / 1e6:9.1f} {err:12.2e}")
    print(f"{'Exposure.to_fluence, cached A (image + variance, float32)':62s} {t_flu:9.4f} "
          f"{t_flu / t_fill:9.2f} {box.area / t_flu / 1e6:9.1f}")
    print(f"{'Exposure.to_fluence, cached A (image only, float32)':62s} {t_flu_img:9.4f} "
          f"{t_flu_img / t_fill:9.2f} {box.area / t_flu_img / 1e6:9.1f}")
    print()
    err = max_rel(field.fill(), exact)
    checks = [
        ("fill max relative error <= 1e-7", f"{err:.2e} (checked bound {field.error_bound:.2e}, "
         f"order {field.approximation.order})", err <= 1e-7),
        ("astropy central differences / fill >= 300", f"{t_astropy / t_fill:.0f}x", t_astropy / t_fill >= 300),
        ("fill / NumPy pass <= 5 (preallocated out both)", f"{t_fill_out / t_np:.2f}x", t_fill_out / t_np <= 5),
        ("fill incl. construction / NumPy pass with allocation <= 5", f"{t_fill / t_np_alloc:.2f}x",
         t_fill / t_np_alloc <= 5),
        ("fill incl. construction / NumPy pass preallocated <= 5", f"{t_fill / t_np:.2f}x",
         t_fill / t_np <= 5),
        ("GalSim makeSkyImage / fill", f"{t_galsim / t_fill:.0f}x", True),
        ("peak memory of fill: output + < 10 %", f"output + {mem_over:.2%} ({peak / 2**20:.1f} MiB)",
         mem_over < 0.10),
        ("to_fluence (image + variance) >= 1 Gpix/s", f"{box.area / t_flu / 1e9:.2f} Gpix/s",
         box.area / t_flu >= 1e9),
        ("to_fluence (image only) >= 1 Gpix/s", f"{box.area / t_flu_img / 1e9:.2f} Gpix/s",
         box.area / t_flu_img >= 1e9),
    ]
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name:58s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
