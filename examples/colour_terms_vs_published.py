"""
Synthetic colour terms against published ones
=============================================

Synthetic colour terms (speclite bandpasses, blackbody SEDs) against the published empirical
PS1 → DECam and Gaia → DECam transformations the Legacy Surveys use::

    python examples/colour_terms_vs_published.py

For each band: the largest difference over the colour range both cover, the same after removing
a constant (a zero point, which any calibration absorbs), and the mean slopes.
"""

from __future__ import annotations

import numpy as np

from photocalib.refcat import GAIA_ZERO_POINTS, ColourTerm, published_colour_term


def compare(synthetic: ColourTerm, published: ColourTerm, lo: float) -> tuple[float, float, float, float, float]:
    hi = min(synthetic.colour_range[1], published.colour_range[1])
    lo = max(lo, synthetic.colour_range[0], published.colour_range[0])
    c = np.linspace(lo, hi, 101)
    d = synthetic(c) - published(c)
    return (float(np.max(np.abs(d))), float(np.max(np.abs(d - d.mean()))),
            float(np.polyfit(c, synthetic(c), 1)[0]), float(np.polyfit(c, published(c), 1)[0]), hi)


def main(argv: list[str] | None = None) -> None:
    """Print both tables (the command line is ignored: nothing is written)."""
    print("PS1 -> DECam (decamDR1 bandpasses), colour g - i (PS1, AB), from 0.4")
    print(f"{'band':4s} {'max|d|':>8s} {'max|d-mean|':>11s} {'slope syn':>9s} {'slope pub':>9s} {'to':>5s}")
    for band in "griz":
        syn = ColourTerm.synthetic(f"panstarrs-{band}", f"decamDR1-{band}", ("panstarrs-g", "panstarrs-i"))
        print(f"{band:4s} " + "{:8.4f} {:11.4f} {:9.4f} {:9.4f} {:5.2f}".format(
            *compare(syn, published_colour_term("ps1-dr2", "decam", band), 0.4)))
    zp = GAIA_ZERO_POINTS["gaia-dr3"]
    shift = (zp["ab"]["BP"] - zp["vega"]["BP"]) - (zp["ab"]["RP"] - zp["vega"]["RP"])
    print("Gaia DR3 G -> DECam (decamDR1), colour BP - RP (AB; Vega = AB + "
          f"{-shift:.4f}), from Vega 0.5")
    print(f"{'band':4s} {'max|d|':>8s} {'max|d-mean|':>11s} {'slope syn':>9s} {'slope pub':>9s} {'to':>5s}")
    for band in "griz":
        syn = ColourTerm.synthetic("gaiadr3-G", f"decamDR1-{band}", ("gaiadr3-BP", "gaiadr3-RP"))
        print(f"{band:4s} " + "{:8.4f} {:11.4f} {:9.4f} {:9.4f} {:5.2f}".format(
            *compare(syn, published_colour_term("gaia-dr3", "decam", band), 0.5 + shift)))


if __name__ == "__main__":
    main()
