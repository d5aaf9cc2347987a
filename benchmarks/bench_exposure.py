"""Speed of Exposure kind conversions and SplineField fills on a 4096×4096 float32 detector.

Peers, measured in the same run: the bare NumPy multiplies a user would write with the area image
already in hand. Run: ``.venv/bin/python benchmarks/bench_exposure.py [--size N]``.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
from astropy.io import fits

import photocalib as pc


def best_of(func, repeat: int = 7) -> float:
    """Minimum wall time of ``repeat`` calls (the machine is shared; the minimum is the cost)."""
    best = np.inf
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - t0)
        del result
    return best


def sip_header(n: int) -> fits.Header:
    h = fits.Header()
    h.update(NAXIS=2, NAXIS1=n, NAXIS2=n, CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP",
             CRVAL1=150.0, CRVAL2=2.0, CRPIX1=n / 2, CRPIX2=n / 2, CD1_1=-4.7e-5, CD1_2=0.0,
             CD2_1=0.0, CD2_2=4.7e-5, A_ORDER=2, B_ORDER=2, A_2_0=1e-6, A_0_2=-2e-7, B_1_1=5e-7)
    return h


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    n = args.size
    npix = n * n
    wcs = pc.SkyWcs.from_header(sip_header(n))
    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 10.0, (n, n)).astype(np.float32)
    variance = np.abs(image) + np.float32(25.0)
    exp_img = pc.Exposure(image, wcs=wcs)
    exp_var = pc.Exposure(image, variance=variance, wcs=wcs)
    t0 = time.perf_counter()
    exp_var.to_fluence()  # fills and caches A and A² (float32)
    t_first = time.perf_counter() - t0
    area = exp_img.pixel_area_image(np.float32)
    area2 = pc.image.pixel_area_image(wcs, exp_img.bbox, np.float32, squared=True)

    rows = [
        ("first to_fluence (fill + cache A, A²)", t_first, None),
        ("NumPy image * A  [peer]", best_of(lambda: image * area), None),
        ("Exposure.to_fluence, image only", best_of(exp_img.to_fluence), 1),
        ("NumPy image * A, variance * A²  [peer]", best_of(lambda: (image * area, variance * area2)), None),
        ("Exposure.to_fluence, image + variance", best_of(exp_var.to_fluence), 3),
    ]
    fl = exp_var.to_fluence()
    rows.append(("Exposure.to_surface_brightness, image + variance", best_of(fl.to_surface_brightness), 3))
    spline = pc.SplineField.on_grid(1.0 + 0.01 * rng.normal(size=(200, 200)), exp_img.bbox)
    ones = np.ones((n, n))
    rows.append(("NumPy one pass over a float64 image  [peer]", best_of(lambda: ones * 2.0), None))
    rows.append(("SplineField(200x200 nodes).fill(), float64", best_of(spline.fill, 3), 5))

    print(f"{n}x{n} float32 ({npix / 1e6:.1f} Mpix); best of several runs")
    print(f"{'operation':52s} {'seconds':>9s} {'Gpix/s':>8s} {'/ peer':>8s}")
    for name, t, peer in rows:
        ratio = "" if peer is None else f"{t / rows[peer][1]:8.2f}"
        print(f"{name:52s} {t:9.4f} {npix / t / 1e9:8.2f} {ratio}")
    t_img = rows[2][1]
    print(f"\ntarget: to_fluence (cached area) >= 1 Gpix/s: {npix / t_img / 1e9:.2f} Gpix/s "
          f"({'met' if npix / t_img >= 1e9 else 'NOT met'})")


if __name__ == "__main__":
    main()
