"""Make the cropped copies of ../shared/realdata that the tests use (see PROVENANCE).

Run from the repository root: ``python tests/data/crop_realdata.py /path/to/realdata``.
Crops keep every header keyword; the WCS stays exact because only CRPIX moves (TPV and SIP
distortions are polynomials in the offset from CRPIX), and ``PCCROP`` records the section.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).parent


def _crop_header(header: fits.Header, x0: int, y0: int, nx: int, ny: int, original: str) -> None:
    header["CRPIX1"] = header["CRPIX1"] - x0
    header["CRPIX2"] = header["CRPIX2"] - y0
    header["PCCROP"] = (f"[{x0 + 1}:{x0 + nx},{y0 + 1}:{y0 + ny}]", f"section of {original}"[:47])


def crop_ztf(src: Path, x0=1200, y0=1400, n=400) -> None:
    out = HERE / "ztf"
    out.mkdir(exist_ok=True)
    for kind in ("sciimg", "mskimg"):
        name = f"ztf_20200924431759_000655_zr_c13_o_q3_{kind}.fits"
        with fits.open(src / "ztf" / name) as h:
            data = h[0].data[y0:y0 + n, x0:x0 + n].copy()
            header = h[0].header.copy()
        _crop_header(header, x0, y0, n, n, name)
        fits.PrimaryHDU(data, header).writeto(out / name, overwrite=True)


def crop_sdss(src: Path, x0=700, y0=500, nx=512, ny=512) -> None:
    out = HERE / "sdss"
    out.mkdir(exist_ok=True)
    name = "frame-r-002583-2-0136.fits"
    with fits.open(src / "sdss" / (name + ".bz2")) as h:
        image = h[0].data[y0:y0 + ny, x0:x0 + nx].copy()
        header = h[0].header.copy()
        calib = h[1].data[x0:x0 + nx].copy()
        sky = h[2].data
        allsky = sky["ALLSKY"][0].copy()
        xinterp = sky["XINTERP"][0][x0:x0 + nx].copy()
        yinterp = sky["YINTERP"][0][y0:y0 + ny].copy()
        astrom = h[3].copy()
        h1_header = h[1].header.copy()
    _crop_header(header, x0, y0, nx, ny, name)
    cols = fits.ColDefs([
        fits.Column("ALLSKY", format=f"{allsky.size}E", dim=f"({allsky.shape[1]}, {allsky.shape[0]})",
                    array=allsky[None]),
        fits.Column("XINTERP", format=f"{nx}E", array=xinterp[None].astype(np.float32)),
        fits.Column("YINTERP", format=f"{ny}E", array=yinterp[None].astype(np.float32)),
    ])
    h1_header["NAXIS1"] = nx
    hdul = fits.HDUList([fits.PrimaryHDU(image, header), fits.ImageHDU(calib),
                         fits.BinTableHDU.from_columns(cols), astrom])
    hdul.writeto(out / name, overwrite=True)
    import bz2

    (out / (name + ".bz2")).write_bytes(bz2.compress((out / name).read_bytes()))
    (out / name).unlink()


def copy_whole(src: Path) -> None:
    for rel in ("rubin-afw/HSC-0908120-056-small.fits", "rubin-afw/calexp-850587-12.fits.fz",
                "rubin-afw/visitSummary-850587.fits"):
        (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, HERE / rel)
    for rel in ("decam-cp/testcase6/gaia/chunk-03687.fits", "decam-cp/testcase6/survey-ccds-1.fits.gz"):
        (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, HERE / rel)
    for path in sorted((src / "decam-cp").glob("testcase*/images/decam/CP/*/*/*.fits")):
        rel = path.relative_to(src)
        (HERE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, HERE / rel)


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/realdata")
    crop_ztf(source)
    crop_sdss(source)
    copy_whole(source)
