"""
Zero points of DECam community-pipeline images from Gaia, compared with the Legacy Surveys'
============================================================================================

For each ``ooi`` image: read it (with its weight and quality maps) through ``read_exposures``,
read the Gaia stars around it at the exposure's epoch, carry Gaia G into the DECam band with a
colour term in BP − RP, run the single-detector chain (``process_detector``) and compare its
zero point (AB magnitude of 1 count/s) with ``ccdzpt`` of the survey's CCD table. The expected
scatter of the difference is the per-star scatter (the survey's own ``ccdphrms`` and the colour
term's uncertainty, in quadrature) over √N for N stars used.

    python examples/decam_gaia_zeropoint.py [folder] [--synthetic]

``folder`` holds ``images/**/*ooi*.fits``, ``gaia/chunk-*.fits`` and ``survey-ccds-1.fits.gz``
(default: the legacypipe testcase6 copy in tests/data). By default the colour term is the
Legacy Surveys' empirical Gaia → DECam transformation (``published_colour_term``: R. Zhou 2020,
as legacypipe uses it, DECam = G + P(BP − RP) in Gaia's Vega magnitudes); ``--synthetic`` uses
``ColourTerm.synthetic`` with speclite curves and blackbodies.
"""

from __future__ import annotations

import glob
import math
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

import photocalib as pc
from photocalib.refcat import ColourTerm, published_colour_term, read_reference, to_reference

#: Per-star uncertainty of Gaia + colour term as a DECam magnitude (the empirical terms' scatter
#: for main-sequence stars is about 0.02 mag).
COLOUR_TERM_SIGMA = 0.02


def gaia_to_decam(band: str, release: str, synthetic: bool = False) -> ColourTerm:
    """The colour term G → DECam ``band`` for reference fluxes from ``read_reference``."""
    if synthetic:
        tag = release.replace("gaia-", "gaia")
        return ColourTerm.synthetic(f"{tag}-G", f"decamDR1-{band}", (f"{tag}-BP", f"{tag}-RP"),
                                    target_band=f"decam_{band}")
    return published_colour_term(release, "decam", band, target_band=f"decam_{band}")


def compare(ooi: str | Path, gaia_files, ccds: Table, *, synthetic: bool = False) -> dict:
    """One image's Gaia zero point against the survey's ``ccdzpt`` (see the module docstring)."""
    exposure = pc.read_exposures(ooi)[0]
    meta = exposure.metadata
    band = str(meta["BAND"]).strip()
    exptime = float(meta["EXPTIME"])
    ny, nx = exposure.shape
    ra0, dec0 = exposure.wcs.pixel_to_sky((nx - 1) / 2, (ny - 1) / 2)
    corner_ra, corner_dec = exposure.wcs.pixel_to_sky(0.0, 0.0)
    radius = 1.5 * float(np.hypot((corner_ra - ra0) * math.cos(math.radians(float(dec0))), corner_dec - dec0))
    gaia = read_reference(list(gaia_files), epoch=Time(float(meta["MJD"]), format="mjd"),
                          region=(float(ra0), float(dec0), radius))
    ct = gaia_to_decam(band, gaia.meta["system"], synthetic)
    reference = to_reference(gaia, colour_term=ct)
    x, y = exposure.wcs.sky_to_pixel(np.asarray(reference["ra"]), np.asarray(reference["dec"]))
    on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    name = Path(ooi).name
    row = ccds[[Path(str(f).strip()).name == name for f in ccds["image_filename"]]]
    if len(row) != 1:
        raise pc.InputError(f"{name}: not in the CCD table (image_filename); pass the survey-ccds file of this image")
    row = row[0]
    out = {
        "file": name, "band": band, "ccdname": str(row["ccdname"]).strip(), "exptime": exptime,
        "ccdzpt": float(row["ccdzpt"]), "ccdphrms": float(row["ccdphrms"]), "n_gaia": int(on.sum()),
        "n_used": 0, "ref_mag": pc.refcat.njy_to_mag(np.asarray(reference["flux"])[on]),
        "xy": np.c_[x[on], y[on]], "colour_term": ct.describe(), "reason": "",
        "zp": math.nan, "zp_err": math.nan, "diff": math.nan, "expected": math.inf,
    }
    if not on.any():
        out["reason"] = "no Gaia star on the image"
        return out
    try:
        result = pc.fit.process_detector(exposure, reference=reference)
    except pc.InputError as exc:
        out["reason"] = f"the single-detector chain stopped: {exc}"
        return out
    if result.fit is None:
        out["reason"] = "no usable star"
        # Why no star was usable: the masked fraction (saturation, bleed trails) at each star.
        mask = exposure.mask if exposure.mask is not None else np.zeros(exposure.shape, int)
        fractions = []
        for xs, ys in out["xy"]:
            cut = mask[max(0, int(ys) - 10):int(ys) + 10, max(0, int(xs) - 10):int(xs) + 10]
            fractions.append(float(np.mean(cut != 0)) if cut.size else math.nan)
        out["masked_fraction"] = fractions
        return out
    out["n_used"] = used = result.fit.n_used
    calib = result.fit.photo_calib
    c = float(np.mean(calib.instflux_to_nanojansky(np.ones(1), np.array([nx / 2]), np.array([ny / 2]))))
    zp = float(pc.refcat.njy_to_mag(c * exptime))
    per_star = math.hypot(out["ccdphrms"], COLOUR_TERM_SIGMA)
    out.update(zp=zp, zp_err=2.5 / math.log(10) * calib.error, diff=zp - out["ccdzpt"],
               expected=per_star / math.sqrt(used))
    return out


def main(argv: list[str]) -> None:
    synthetic = "--synthetic" in argv
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else Path(__file__).parents[1] / "tests" / "data" / "decam-cp" / "testcase6"
    ccds = Table.read(root / "survey-ccds-1.fits.gz")
    gaia_files = sorted(glob.glob(str(root / "gaia" / "chunk-*.fits")))
    print(f"{'image':38s} {'band':4s} {'N_gaia':>6s} {'N_used':>6s} {'ZP':>8s} {'ccdzpt':>8s} {'diff':>8s} {'expect':>8s}")
    for ooi in sorted(glob.glob(str(root / "images" / "**" / "*ooi*.fits"), recursive=True)):
        r = compare(ooi, gaia_files, ccds, synthetic=synthetic)
        print(f"{r['file']:38s} {r['band']:4s} {r['n_gaia']:6d} {r['n_used']:6d} {r['zp']:8.3f} "
              f"{r['ccdzpt']:8.3f} {r['diff']:8.3f} {r['expected']:8.3f}")
        if "masked_fraction" in r:
            print(f"    no usable star: Gaia stars of DECam mag {np.round(r['ref_mag'], 2).tolist()}, "
                  f"masked fraction of their central 20x20 pixels {np.round(r['masked_fraction'], 2).tolist()}")
        elif r["reason"]:
            print(f"    {r['reason']}")


if __name__ == "__main__":
    main(sys.argv[1:])
