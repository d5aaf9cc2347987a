"""Benchmark: flattening a chromatic flat to an SED, against direct integration over the cube.

Peer: the obvious implementation, which interpolates the cube onto the integration grid and
integrates pixel by pixel (np.trapezoid over λ, in row blocks to bound memory). photocalib
builds one weight vector per SED and does one tensordot over the cube.
Run: .venv/bin/python benchmarks/bench_chromatic.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from photocalib.isr import ChromaticFlat, Spectrum


def _galsim_share() -> Path:
    import galsim

    return Path(galsim.meta_data.share_dir)


def _peer_flatten(wl, cube, t_wl, t_val, spec: Spectrum, step: float = 0.25) -> np.ndarray:
    """Direct integration: cube interpolated onto a fine grid, trapezoid per pixel."""
    lo, hi = t_wl[0], t_wl[-1]
    grid = np.unique(np.concatenate([np.arange(lo, hi, step), [hi], spec.wavelength_nm[
        (spec.wavelength_nm > lo) & (spec.wavelength_nm < hi)]]))
    g = np.interp(grid, t_wl, t_val) * spec.photons(grid)
    den = np.trapezoid(g, grid)
    k = np.clip(np.searchsorted(wl, grid, side="right") - 1, 0, wl.size - 2)
    t = np.clip((grid - wl[k]) / (wl[k + 1] - wl[k]), 0.0, 1.0)
    out = np.empty(cube.shape[1:])
    for r0 in range(0, cube.shape[1], 16):
        block = cube[:, r0 : r0 + 16]
        fine = block[k] * (1 - t)[:, None, None] + block[k + 1] * t[:, None, None]
        out[r0 : r0 + 16] = np.trapezoid(fine * g[:, None, None], grid, axis=0) / den
    return out


def _best(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    share = _galsim_share()
    t_wl, t_val = np.loadtxt(share / "bandpasses" / "LSST_r.dat", unpack=True)
    wl = np.arange(530.0, 712.0, 2.0)
    ny, nx = 577, 256  # a megacam detector (4612 x 2048) binned by 8
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:ny, 0:nx]
    t2 = ((xx / nx) ** 2 + (yy / ny) ** 2) / 2
    cube = (1.0 + 0.02 * t2[None] * (wl[:, None, None] - 620.0) / 100.0
            + 1e-3 * rng.standard_normal((wl.size, ny, nx))).astype(np.float32)
    flat = ChromaticFlat(wl, cube, (t_wl, t_val), binning=8)
    vega = Spectrum.from_file(share / "SEDs" / "vega.txt")
    cww = Spectrum.from_file(share / "SEDs" / "CWW_Sbc_ext.sed", wave_unit="Angstrom")

    ours = flat.flatten(vega)
    peer = _peer_flatten(wl, cube, t_wl, t_val, vega)
    err = float(np.max(np.abs(ours - peer)))
    t_ours = _best(lambda: flat.flatten(vega))
    t_peer = _best(lambda: _peer_flatten(wl, cube, t_wl, t_val, vega), repeat=1)
    t_w = _best(lambda: flat.weights(cww))
    flat.flatten_field(vega, order=6, bin_size=4)  # fits every monochromatic flat once
    t_field = _best(lambda: flat.flatten_field(cww, order=6, bin_size=4))

    print(f"cube {wl.size} x {ny} x {nx} float32 (megacam detector binned by 8), LSST r, Vega")
    print(f"{'operation':44s} {'photocalib [ms]':>16s} {'peer [ms]':>10s} {'ratio':>7s}")
    print(f"{'flatten (weights + tensordot)':44s} {1e3 * t_ours:16.2f} {1e3 * t_peer:10.2f} "
          f"{t_peer / t_ours:6.1f}x")
    print(f"{'weights for one SED':44s} {1e3 * t_w:16.2f} {'':>10s} {'':>7s}")
    print(f"{'flatten_field, another SED (fits cached)':44s} {1e3 * t_field:16.2f} {'':>10s} {'':>7s}")
    print(f"max |photocalib - peer| = {err:.2e}")


if __name__ == "__main__":
    main()
