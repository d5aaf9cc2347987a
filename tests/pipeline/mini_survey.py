"""A tiny survey on disk for pipeline tests, written like `photocalib simulate` writes one.

Any celestial FITS header (e.g. astropy's real PTF TPV and SIP headers) is cropped to small
detectors and dithered across visits; stars are pixel-integrated Gaussians placed through
astropy's own WCS, the sky is uniform in surface brightness (so ∝ pixel area in fluence), the
dome flat is a lamp of uniform surface brightness, all with Poisson and read noise.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import astropy
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

E_PER_NJY = 0.5  # electrons per nJy at unit transmission
GAIN, BIAS, READ_NOISE = 2.0, 1000.0, 5.0
LAMP = 3.0e7  # dome-lamp electrons per arcsec²

ASTROPY_WCS_DATA = Path(astropy.__file__).parent / "wcs" / "tests" / "data"

# The run configuration the pipeline tests share. PTF pixels are ~1 arcsec: 8" apertures (no
# aperture correction needed for these Gaussian PSFs of sigma < 2"), a background mesh that fits
# 200-pixel detectors, and a linear star flat (3 visits with small dithers cannot constrain more).
BASE_CONFIG: dict[str, dict] = {
    "measure": {"aperture_arcsec": 8.0},
    "background": {"mesh_size": 50},
    "calibration": {"star_flat_order": 1},
    "warp": {"coadd_size": 256},
    "dask": {"n_workers": 2, "memory_limit": "1GiB", "progress": False},
}


def astropy_header(name: str = "siponly.hdr") -> fits.Header:
    """One of astropy's real WCS test headers: ``tpvonly.hdr`` (PTF TPV) or ``siponly.hdr`` (SIP)."""
    return fits.Header.fromfile(ASTROPY_WCS_DATA / name, sep="", endcard=True, padding=False)


def mini_config(**sections: dict) -> str:
    """TOML text of `BASE_CONFIG` with each section's keys updated by ``sections``.

    A key set to None is left out; a section not in `BASE_CONFIG` is added.
    """
    merged = {name: dict(keys) for name, keys in BASE_CONFIG.items()}
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in merged.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            if value is None:
                continue
            text = json.dumps(value) if isinstance(value, bool | str) else repr(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _render_stars(x0, y0, counts, sigma, half, shape) -> np.ndarray:
    """Sum of pixel-integrated Gaussians of total ``counts`` at (x0, y0), on an image of ``shape``."""
    ny, nx = shape
    image = np.zeros(shape)
    if x0.size == 0:
        return image
    off = np.arange(-half, half + 1)
    px = np.round(x0).astype(int)[:, None] + off[None, :]
    py = np.round(y0).astype(int)[:, None] + off[None, :]
    s = sigma * np.sqrt(2.0)
    fx = 0.5 * (erf((px + 0.5 - x0[:, None]) / s) - erf((px - 0.5 - x0[:, None]) / s))
    fy = 0.5 * (erf((py + 0.5 - y0[:, None]) / s) - erf((py - 0.5 - y0[:, None]) / s))
    vals = counts[:, None, None] * fy[:, :, None] * fx[:, None, :]
    yy = np.broadcast_to(py[:, :, None], vals.shape)
    xx = np.broadcast_to(px[:, None, :], vals.shape)
    ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    np.add.at(image, (yy[ok], xx[ok]), vals[ok])
    return image


def _area(w: WCS, shape) -> np.ndarray:
    """Pixel area (arcsec²) by central differences of astropy's WCS on the unit sphere."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)

    def unit(x, y):
        ra, dec = np.radians(w.all_pix2world(x, y, 0))
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)

    h = 0.5
    dx = (unit(xx + h, yy) - unit(xx - h, yy)) / (2 * h)
    dy = (unit(xx, yy + h) - unit(xx, yy - h)) / (2 * h)
    return np.linalg.norm(np.cross(dx, dy), axis=-1) * (np.degrees(1) * 3600.0) ** 2


def write_mini_survey(out: Path, header: fits.Header, *, n_visits: int = 3, size: int = 200,
                      offsets=((700, 1500), (905, 1500)), n_stars: int = 150,
                      seed: int = 3) -> dict:
    """Write raw/, flats/, refcat.parquet and truth/ under ``out``; return the truth."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    for sub in ("raw", "flats", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    header = header.copy()
    for key in ("NAXIS1", "NAXIS2"):
        header.pop(key, None)
    det_headers = []
    for x0, y0 in offsets:
        h = header.copy()
        h["CRPIX1"] = header["CRPIX1"] - x0
        h["CRPIX2"] = header["CRPIX2"] - y0
        det_headers.append(h)
    # Stars over the union of the detectors' footprints (with margin for the dithers).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corners = np.concatenate([WCS(h).all_pix2world([[0, 0], [size, size]], 0) for h in det_headers])
    ra_lo, dec_lo = corners.min(0) - 10 / 3600
    ra_hi, dec_hi = corners.max(0) + 10 / 3600
    mag = rng.uniform(16.0, 21.0, n_stars)
    flux = 10 ** (-0.4 * (mag - 31.4))
    colour = rng.normal(0.8, 0.3, n_stars)
    stars = pd.DataFrame({"star": np.arange(n_stars), "ra": rng.uniform(ra_lo, ra_hi, n_stars),
                          "dec": rng.uniform(dec_lo, dec_hi, n_stars), "r_flux": flux,
                          "g_flux": flux * 10 ** (0.4 * colour * 0.7), "i_flux": flux * 10 ** (-0.4 * colour * 0.3)})
    grey = rng.normal(0.0, 0.02, n_visits)
    seeing = rng.uniform(1.4, 1.9, n_visits)  # Gaussian sigma in pixels
    sky_e_arcsec2 = 800.0
    flats = []
    for d, h in enumerate(det_headers):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            area = _area(WCS(h), (size, size))
        flat = rng.poisson(LAMP * area).astype(np.float32)
        fh = fits.Header()
        fh["DETECTOR"] = d
        fh["LAMPLVL"] = (LAMP, "[electron/arcsec2] lamp level")
        fh["BUNIT"] = "electron"
        fits.PrimaryHDU(flat, fh).writeto(out / "flats" / f"dome-r-{d:03d}.fits", overwrite=True)
        flats.append(area)
    for v in range(n_visits):
        dra, ddec = rng.uniform(-8, 8, 2) / 3600
        hdus = [fits.PrimaryHDU()]
        hdus[0].header["VISIT"] = 1000 + v
        for d, h in enumerate(det_headers):
            hv = h.copy()
            hv["CRVAL1"] = h["CRVAL1"] + dra
            hv["CRVAL2"] = h["CRVAL2"] + ddec
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = WCS(hv)
            x, y = w.all_world2pix(stars["ra"], stars["dec"], 0)
            inside = (x > -10) & (x < size + 10) & (y > -10) & (y < size + 10)
            counts = stars["r_flux"].to_numpy()[inside] * E_PER_NJY * 10 ** (-0.4 * grey[v])
            electrons = _render_stars(x[inside], y[inside], counts, seeing[v], 8, (size, size))
            electrons += sky_e_arcsec2 * flats[d]
            noisy = rng.poisson(electrons) + rng.normal(0, READ_NOISE, electrons.shape)
            raw = (noisy / GAIN + BIAS).astype(np.float32)
            hv["VISIT"] = 1000 + v
            hv["DETECTOR"] = d
            hv["FILTER"] = "r"
            hv["EXPTIME"] = 30.0
            hv["GAIN"] = GAIN
            hv["RDNOISE"] = READ_NOISE
            hv["BIAS"] = BIAS
            hv["SATURATE"] = 60000.0
            hv["BUNIT"] = "adu"
            hdus.append(fits.ImageHDU(raw, hv, name=f"DET{d:03d}"))
        fits.HDUList(hdus).writeto(out / "raw" / f"visit-{1000 + v:06d}.fits", overwrite=True)
    refsel = mag < 20.0
    ref = pd.DataFrame({"id": stars["star"][refsel], "ra": stars["ra"][refsel], "dec": stars["dec"][refsel],
                        "flux": stars["r_flux"][refsel] * (1 + rng.normal(0, 0.002, refsel.sum())),
                        "flux_err": stars["r_flux"][refsel] * 0.002})
    ref.to_parquet(out / "refcat.parquet", index=False)
    stars.to_parquet(out / "truth" / "stars.parquet", index=False)
    pd.DataFrame({"visit": 1000 + np.arange(n_visits), "grey_mag": grey}).to_parquet(
        out / "truth" / "visits.parquet", index=False)
    return {"stars": stars, "grey": grey}
