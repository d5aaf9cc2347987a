"""The report's plots, each a function of plain arrays that returns a matplotlib Figure.

Nothing here reads files or knows the pipeline: the report gathers the arrays, so every plot
can be drawn from whatever pieces of a run exist (or from a notebook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on workers and CI machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "FocalPlanePanel",
    "focal_plane_map",
    "focal_plane_maps",
    "grey_terms",
    "grey_terms_models",
    "residual_maps",
    "residual_vs_colour",
    "residual_vs_radius",
    "background_fields",
    "binned_medians",
    "coadd_cutout",
    "figure_to_png",
]


@dataclass(frozen=True)
class FocalPlanePanel:
    """One detector's values on a coarse grid of focal-plane positions.

    ``xi``, ``eta`` (arcsec, focal-plane coordinates: the tangent plane about the pointing,
    rotated to the detector axes) and ``value`` are 2-D arrays of one shape: the corners of a
    detector's cells may be rotated or distorted.
    """

    xi: np.ndarray
    eta: np.ndarray
    value: np.ndarray
    label: str = ""


def _limits(values: np.ndarray, symmetric: bool) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    lo, hi = np.percentile(finite, [1, 99])
    if symmetric:
        m = max(abs(lo), abs(hi), 1e-12)
        return -m, m
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-12)
    return float(lo), float(hi)


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation (NaN for no finite value)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _robust_limits(values: np.ndarray) -> tuple[float, float]:
    """A symmetric colour range of ±4 robust σ (at least ±2), so outliers do not wash it out."""
    s = _robust_sigma(values)
    m = max(4.0 * s, 2.0) if np.isfinite(s) else 10.0
    return -m, m


def focal_plane_map(panels: Sequence[FocalPlanePanel], title: str, colorbar_label: str,
                    symmetric: bool = False, cmap: str = "viridis") -> Figure:
    """Draw a quantity across the focal plane, one pcolormesh per detector.

    Parameters
    ----------
    panels : sequence of FocalPlanePanel
        One per detector; values may be NaN where unknown.
    title, colorbar_label : str
    symmetric : bool
        Centre the colour scale on zero (for residuals).
    """
    fig, ax = plt.subplots(figsize=(6.4, 5.4), layout="constrained")
    allv = np.concatenate([np.ravel(p.value) for p in panels]) if panels else np.zeros(1)
    vmin, vmax = _limits(allv, symmetric)
    mesh = None
    for p in panels:
        mesh = ax.pcolormesh(p.xi / 60.0, p.eta / 60.0, p.value, shading="gouraud",
                             vmin=vmin, vmax=vmax, cmap=cmap)
        if p.label:
            ax.text(float(np.mean(p.xi)) / 60.0, float(np.mean(p.eta)) / 60.0, p.label,
                    ha="center", va="center", fontsize=6, color="white", alpha=0.8)
    if mesh is not None:
        fig.colorbar(mesh, ax=ax, label=colorbar_label)
    ax.set_aspect("equal")
    ax.set_xlabel("focal-plane x (arcmin)")
    ax.set_ylabel("focal-plane y (arcmin)")
    ax.set_title(title)
    return fig


def focal_plane_maps(panel_sets: Mapping[str, Sequence[FocalPlanePanel]], title: str,
                     colorbar_label: str, cmap: str = "RdBu_r") -> Figure:
    """Several focal-plane maps side by side on one symmetric colour scale (e.g. fitted and
    true star flats, each with its median removed by the caller)."""
    names = list(panel_sets)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.8), layout="constrained",
                             squeeze=False, sharex=True, sharey=True)
    allv = np.concatenate([np.ravel(p.value) for n in names for p in panel_sets[n]])
    vmin, vmax = _limits(allv, symmetric=True)
    mesh = None
    for ax, name in zip(axes[0], names, strict=True):
        for p in panel_sets[name]:
            mesh = ax.pcolormesh(p.xi / 60.0, p.eta / 60.0, p.value, shading="gouraud",
                                 vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("focal-plane x (arcmin)")
    axes[0][0].set_ylabel("focal-plane y (arcmin)")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes[0]), label=colorbar_label)
    fig.suptitle(title)
    return fig


def grey_terms(visits: np.ndarray, fitted_mmag: np.ndarray,
               truth_mmag: np.ndarray | None = None, title: str = "Grey term per visit") -> Figure:
    """The fitted grey (extinction) term per visit, with the truth when known (mmag)."""
    return grey_terms_models(visits, {"fitted": fitted_mmag}, truth_mmag, title=title)


def grey_terms_models(visits: np.ndarray, fitted_mmag: Mapping[str, np.ndarray],
                      truth_mmag: np.ndarray | None = None,
                      title: str = "Grey term per visit, each joint model") -> Figure:
    """The grey term per visit of several joint models on one axis, with the truth when known."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    visits = np.asarray(visits)
    order = np.argsort(visits)
    pos = np.arange(visits.size)
    for k, (name, values) in enumerate(fitted_mmag.items()):
        ax.plot(pos + 0.06 * (k - (len(fitted_mmag) - 1) / 2), np.asarray(values, float)[order], "o-", ms=4,
                label=name)
    if truth_mmag is not None:
        ax.plot(pos, np.asarray(truth_mmag)[order], "kx--", label="truth")
    ax.set_xticks(pos, [str(v) for v in visits[order]], rotation=45, fontsize=7)
    ax.set_xlabel("visit")
    ax.set_ylabel("grey term (mmag)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def residual_maps(xi: Mapping[str, np.ndarray], eta: Mapping[str, np.ndarray],
                  residual_mmag: Mapping[str, np.ndarray], title: str) -> Figure:
    """Residuals (mmag) of stars across the focal plane, one panel per calibration, one scale.

    Parameters
    ----------
    xi, eta, residual_mmag : mappings from a calibration's name to arrays of one shape
        Focal-plane positions (arcsec) and residuals (calibrated − truth, mmag).
    """
    names = list(residual_mmag)
    ncol = min(len(names), 3)
    nrow = -(-len(names) // ncol)
    allx = np.concatenate([np.ravel(xi[n]) for n in names])
    ally = np.concatenate([np.ravel(eta[n]) for n in names])
    ok = np.isfinite(allx) & np.isfinite(ally)
    span_x = np.ptp(allx[ok]) if ok.any() else 1.0
    span_y = np.ptp(ally[ok]) if ok.any() else 1.0
    aspect = float(np.clip(span_y / span_x if span_x > 0 else 1.0, 0.3, 2.0))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 1.0, (4.6 * aspect + 1.0) * nrow),
                             layout="constrained", squeeze=False, sharex=True, sharey=True)
    allv = np.concatenate([np.ravel(residual_mmag[n]) for n in names])
    vmin, vmax = _robust_limits(allv)
    sc = None
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        r = np.asarray(residual_mmag[name])
        sc = ax.scatter(np.asarray(xi[name]) / 60.0, np.asarray(eta[name]) / 60.0, c=r, s=8,
                        cmap="RdBu_r", vmin=vmin, vmax=vmax, linewidths=0)
        ax.set_title(f"{name}\nrobust σ {_robust_sigma(r):.1f} mmag")
        ax.set_aspect("equal")
        ax.set_xlabel("focal-plane x (arcmin)")
    for row in axes:
        row[0].set_ylabel("focal-plane y (arcmin)")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes.ravel()[: len(names)]), label="residual (mmag)")
    fig.suptitle(title)
    return fig


def _binned(x: np.ndarray, y: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return np.empty(0), np.empty(0)
    edges = np.quantile(x, np.linspace(0, 1, nbins + 1))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nbins - 1)
    counts = np.bincount(idx, minlength=nbins)
    # Median per bin without a Python loop: sort by (bin, y) and take the middle element.
    order = np.lexsort((y, idx))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    have = counts > 0
    mid = starts[have] + (counts[have] - 1) // 2
    centres = np.bincount(idx, weights=x, minlength=nbins)[have] / counts[have]
    return centres, y[order][mid]


def binned_medians(x: np.ndarray, y: np.ndarray, nbins: int,
                   min_count: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Medians of ``y`` in ``nbins`` bins of ``x`` holding equal numbers of points.

    Returns bin centres (mean x), medians, their standard errors (1.2533 × the bin's robust
    standard deviation / √n, the error of a median of Gaussian values) and the counts, for
    bins with at least ``min_count`` points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < min_count:
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=int)
    nbins = max(1, min(nbins, x.size // min_count))
    edges = np.quantile(x, np.linspace(0, 1, nbins + 1))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nbins - 1)
    centres, medians, errors, counts = [], [], [], []
    for k in range(nbins):  # a loop over a handful of bins, not over stars
        yk = y[idx == k]
        if yk.size < min_count:
            continue
        med = np.median(yk)
        sigma = 1.4826 * np.median(np.abs(yk - med))
        centres.append(x[idx == k].mean())
        medians.append(med)
        errors.append(1.2533 * sigma / np.sqrt(yk.size))
        counts.append(yk.size)
    return np.array(centres), np.array(medians), np.array(errors), np.array(counts, dtype=int)


def residual_vs_colour(colour: Mapping[str, np.ndarray], residual_mmag: Mapping[str, np.ndarray],
                       colour_label: str = "colour (mag)", nbins: int = 8) -> Figure:
    """Binned median residual (mmag) against colour for each calibration, with error bars.

    Medians in bins of equal star counts, each with the standard error of its median; no cloud
    of individual stars (its streaks hide a slope of a few mmag per magnitude).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    names = list(residual_mmag)
    width = 0.012 * (len(names) - 1)
    for k, name in enumerate(names):
        bx, by, be, _ = binned_medians(np.asarray(colour[name], float), np.asarray(residual_mmag[name], float),
                                       nbins)
        # small horizontal offsets so the error bars of the calibrations do not overlap
        shift = (k - (len(names) - 1) / 2) * (2 * width / max(len(names) - 1, 1)) if len(names) > 1 else 0.0
        ax.errorbar(bx + shift, by, yerr=be, fmt="o-", ms=4, capsize=3, lw=1.2, label=name)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(colour_label)
    ax.set_ylabel("median residual (mmag)")
    ax.set_title("Residual against colour: binned medians ± standard error")
    ax.legend(fontsize=8)
    return fig


def colour_term_fit(colour: np.ndarray, offset_mag: np.ndarray, term, colour_label: str = "colour (mag)",
                    nbins: int = 10) -> Figure:
    """The colour term ``term(colour)`` over its valid range, with the matched stars' measured
    offsets (calibrated instrument magnitude − reference-band magnitude, before the term) as
    binned medians ± standard error: where the points leave the curve the term does not fit.

    ``term`` is a :class:`photocalib.refcat.ColourTerm` (anything with ``colour_range``,
    ``target_band``, ``reference_band`` and a call giving mag); stars outside its range are
    binned too, drawn beside the range's dashed limits.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    lo, hi = term.colour_range
    c = np.asarray(colour, float)
    finite = c[np.isfinite(c)]
    span_lo = float(np.nanmin(finite)) if finite.size else lo
    span_hi = float(np.nanmax(finite)) if finite.size else hi
    grid_lo = lo if np.isfinite(lo) else span_lo
    grid_hi = hi if np.isfinite(hi) else span_hi
    grid = np.linspace(grid_lo, grid_hi, 200)
    ax.plot(grid, 1000.0 * np.asarray(term(grid), float), "k-", lw=1.5,
            label=f"colour term {term.target_band} − {term.reference_band}")
    for edge in (lo, hi):
        if np.isfinite(edge):
            ax.axvline(edge, color="0.5", ls="--", lw=0.8)
    bx, by, be, bn = binned_medians(c, 1000.0 * np.asarray(offset_mag, float), nbins)
    ax.errorbar(bx, by, yerr=be, fmt="o", ms=4, capsize=3, color="C1",
                label=f"matched stars: binned medians ({int(bn.sum())} stars)")
    ax.set_xlabel(colour_label)
    ax.set_ylabel(f"{term.target_band} (calibrated) − {term.reference_band} (reference)  [mmag]")
    ax.set_title("Colour term and the measured offsets it should follow")
    ax.legend(fontsize=8)
    return fig


def background_fields(fields: Mapping[str, np.ndarray], extent: tuple[float, float, float, float],
                      reference: str, coadd_background: np.ndarray | None = None,
                      unit: str = "nJy/arcsec²") -> Figure:
    """The background fields matched per visit on the coadd grid, on one colour scale.

    ``fields`` maps a visit label to its field sampled on a grid over ``extent`` (coadd pixels,
    ``(x0, x1, y0, y1)``); the reference visit's is zero by construction. The coadd-wide
    background, when one was subtracted, is drawn last on its own scale.
    """
    items = list(fields.items())
    n = len(items) + (coadd_background is not None)
    ncol = min(n, 4)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol + 0.8, 2.8 * nrow + 0.6), layout="constrained",
                             squeeze=False)
    values = np.concatenate([np.ravel(v) for _, v in items]) if items else np.zeros(1)
    vmax = float(np.nanmax(np.abs(values))) or 1.0
    im = None
    for ax, (name, img) in zip(axes.ravel(), items, strict=False):
        im = ax.imshow(img, origin="lower", extent=extent, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"visit {name}" + (" (reference)" if str(name) == str(reference) else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel()[: len(items)].tolist(), shrink=0.8,
                     label=f"visit − reference ({unit})")
    if coadd_background is not None:
        ax = axes.ravel()[len(items)]
        im2 = ax.imshow(coadd_background, origin="lower", extent=extent, cmap="viridis")
        ax.set_title("coadd background", fontsize=9)
        ax.tick_params(labelsize=7)
        fig.colorbar(im2, ax=ax, shrink=0.8, label=unit)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle("Background matching: each visit's fitted sky difference on the coadd grid (pixels)")
    return fig


def residual_vs_radius(radius_arcmin: Mapping[str, np.ndarray],
                       residual_mmag: Mapping[str, np.ndarray], nbins: int = 12) -> Figure:
    """Residual (mmag) against distance from the pointing centre, binned medians per calibration."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for name, r in residual_mmag.items():
        bx, by = _binned(np.asarray(radius_arcmin[name], float), np.asarray(r, float), nbins)
        ax.plot(bx, by, "o-", label=name)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("radius from the pointing (arcmin)")
    ax.set_ylabel("median residual (mmag)")
    ax.set_title("Radial trend of the residuals")
    ax.legend(fontsize=8)
    return fig


def coadd_cutout(image: np.ndarray, title: str = "Coadd cutout (nJy per pixel)") -> Figure:
    """A cutout of the coadd with an asinh stretch around the sky level."""
    image = np.asarray(image, dtype=float)
    finite = image[np.isfinite(image)]
    fig, ax = plt.subplots(figsize=(5.4, 5.0), layout="constrained")
    if finite.size:
        sky = np.median(finite)
        noise = 1.4826 * np.median(np.abs(finite - sky)) or 1.0
        stretched = np.arcsinh((image - sky) / (3.0 * noise))
        lo, hi = np.nanpercentile(stretched, [1, 99.7])
        ax.imshow(stretched, origin="lower", cmap="gray", vmin=lo, vmax=hi,
                  interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return fig


def figure_to_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it."""
    import io

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()
