r"""Background matching of fluence warps before they are stacked (the design note's open step).

Differences are taken on **fluence** warps, where the sources cancel, and modelled on
**surface brightness**, where a sky is smooth (rule 3): for each visit (or detector of a visit)

.. math::

    D(p) = \frac{F_v(p) - F_{\rm ref}(p)}{A_{\rm out}(p)}

on the coadd grid, in nJy/arcsec², with pixels where the sources do not cancel (variable,
moving, differently seen, saturated) clipped against each bin's median, binned, and fitted with
a smooth Chebyshev field :math:`B_v`; :math:`B_v A_{\rm out}` is subtracted from the warp, so
every visit then carries the reference visit's sky. One large-scale background of the stack
(:func:`fit_stack_background`) may then take that sky out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..fields import BoundedField, ConstantField
from ..fields.robust import robust_field_fit
from ..geom import Box

__all__ = ["MatchedBackgrounds", "fit_stack_background", "match_backgrounds"]

#: A piece of a coadd: (sub-box of the grid, fluence, variance, mask, usable pixels).
Piece = tuple[Box, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MatchedBackgrounds:
    """The outcome of :func:`match_backgrounds`.

    Attributes
    ----------
    fields : dict
        Key (visit, or ``(visit, detector)`` with ``per="detector"``) -> the fitted difference
        from the reference, a BoundedField in nJy/arcsec² on coadd-grid pixels (its box the coadd
        grid, or the detector's sub-box); the reference's own entries are zero.
    reference : hashable
        The reference visit.
    n_bins : dict
        Key -> number of bins used in the fit (after clipping).
    order : dict
        Key -> Chebyshev order actually fitted (lowered where few bins overlap the reference).
    """

    fields: dict
    reference: Hashable
    n_bins: dict
    order: dict


def _slices(box: Box) -> tuple[slice, slice]:
    return (slice(box.y0, box.y0 + box.height), slice(box.x0, box.x0 + box.width))


def field_on(field: BoundedField, box: Box) -> np.ndarray:
    """``field`` evaluated at the pixel centres of ``box`` (coadd-grid coordinates)."""
    if field.bbox is not None and field.bbox == box:
        return field.fill()
    xs = np.arange(box.x0, box.x0 + box.width, dtype=np.float64)
    ys = np.arange(box.y0, box.y0 + box.height, dtype=np.float64)
    return np.asarray(field.evaluate(xs[None, :], ys[:, None]), dtype=np.float64) * np.ones(box.shape)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` ORed over a square of half-width ``radius`` (separable shifts; fast)."""
    out = mask.copy()
    for axis in (0, 1):
        base = out.copy()
        n = base.shape[axis]
        for shift in range(1, min(radius, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - shift), slice(shift, n)
            out[tuple(lo)] |= base[tuple(hi)]
            out[tuple(hi)] |= base[tuple(lo)]
    return out


def _bin_means(values: np.ndarray, variance: np.ndarray, shape: tuple[int, int], bin_size: int, nsigma: float,
               grow: int, min_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clipped means of ``values`` (NaN = unusable) in square bins of ``bin_size`` pixels.

    ``values`` and ``variance`` are padded to whole bins (NaN outside ``shape``). A pixel
    further than ``nsigma`` × its own noise from its bin's median (taken on every other pixel
    of each axis, for speed) is masked with its neighbours within ``grow`` pixels (the wings of
    a residual that did not cancel); the mean of the rest is the bin's level, its error from
    the pixels' own variances. Returns bin-centre x, y, level and error, for bins with at least
    ``min_fraction`` of their pixels usable. ``values`` and ``variance`` are scratch: the
    pixels left out are zeroed in place.
    """
    ny, nx = shape
    b = int(bin_size)
    nby, nbx = values.shape[0] // b, values.shape[1] // b
    v = values.reshape(nby, b, nbx, b)
    with _quiet():
        med = np.nanmedian(v[:, ::2, :, ::2].transpose(0, 2, 1, 3).reshape(nby, nbx, -1), axis=2)
    with np.errstate(invalid="ignore"):
        dev = v - med[:, None, :, None].astype(values.dtype)
        dev *= dev
        # NaN pixels compare False here, so they are never outliers (nor grown from)
        outlier = (dev > (nsigma * nsigma) * variance.reshape(v.shape)).reshape(values.shape)
    del dev
    if grow > 0 and outlier.any():
        outlier = _grow(outlier, int(grow))
    drop = outlier
    drop |= np.isnan(values)
    # Zero what is left out, in place (the caller's scratch planes), and sum the rest.
    np.copyto(values, 0.0, where=drop)
    np.copyto(variance, 0.0, where=drop)
    keep = ~drop
    n = keep.reshape(v.shape).sum(axis=(1, 3))
    total = values.reshape(v.shape).sum(axis=(1, 3), dtype=np.float64)
    var = variance.reshape(v.shape).sum(axis=(1, 3), dtype=np.float64)
    use = (n >= max(1.0, min_fraction * b * b)) & np.isfinite(med)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = total / np.maximum(n, 1)
        err = np.sqrt(var) / np.maximum(n, 1)
    yc, xc = np.mgrid[0:nby, 0:nbx].astype(np.float64)
    xc = np.minimum(xc * b + (b - 1) / 2.0, nx - 1)
    yc = np.minimum(yc * b + (b - 1) / 2.0, ny - 1)
    use &= np.isfinite(level) & np.isfinite(err) & (err > 0)
    return xc[use], yc[use], level[use], err[use]


def _padded(shape: tuple[int, int], b: int) -> np.ndarray:
    """A float32 NaN array of ``shape`` rounded up to whole bins of ``b`` pixels."""
    return np.full((-(-shape[0] // b) * b, -(-shape[1] // b) * b), np.nan, dtype=np.float32)


class _quiet:
    """Silence NumPy's all-NaN-slice RuntimeWarnings (empty bins are expected)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def _fit(xc, yc, level, err, order: int, bbox: Box) -> tuple[BoundedField, int]:
    """Robust Chebyshev fit of bin levels; the order is lowered until the bins over-determine it."""
    for o in range(order, -1, -1):
        nterm = (o + 1) * (o + 2) // 2
        if level.size >= 3 * nterm:
            if o == 0:
                res = robust_field_fit(xc, yc, level, err, order=None, bbox=bbox, nsigma=5.0)
                return ConstantField(float(res.field.evaluate(0.0, 0.0)), bbox), 0
            return robust_field_fit(xc, yc, level, err, order=o, bbox=bbox, nsigma=5.0).field, o
    raise ValueError("too few bins")


def match_backgrounds(
    pieces: Sequence[Piece],
    keys: Sequence[tuple[Hashable, Hashable]],
    area: np.ndarray,
    *,
    reference: Hashable | None = None,
    order: int = 2,
    per: str = "visit",
    bin_size: int = 32,
    nsigma: float = 3.0,
    grow: int = 2,
    min_fraction: float = 0.25,
    stride: int = 1,
) -> MatchedBackgrounds:
    r"""Fit every visit's background difference from a reference visit on the coadd grid.

    Parameters
    ----------
    pieces : sequence of (Box, fluence, variance, mask, ok)
        Each input's warp on its sub-box of the coadd grid (nJy per output pixel).
    keys : sequence of (visit, detector)
        The visit and detector of each piece (a piece with no visit is its own visit).
    area : numpy.ndarray
        Pixel area of the coadd grid, arcsec², shape of the grid.
    reference : visit, optional
        The reference visit; default the visit whose warps cover most of the grid.
    order : int
        Chebyshev order of each field (lowered where few bins overlap the reference).
    per : {"visit", "detector"}
        One field per visit (over the whole grid), or one per detector of a visit.
    bin_size : int
        Side of the bins, coadd pixels, in which the difference is averaged.
    nsigma, grow : float, int
        Pixels further than ``nsigma`` times their noise from their bin's median, and their
        neighbours within ``grow`` pixels, are left out (sources that did not cancel).
    min_fraction : float
        A bin is used when at least this fraction of its pixels is.
    stride : int
        The statistics use every ``stride``-th pixel along each axis (1: all of them).

    Returns
    -------
    MatchedBackgrounds

    Raises
    ------
    InputError
        A bad option, an unknown reference visit, or a visit that overlaps the reference too
        little to fit even a constant (the message names it).
    """
    if per not in ("visit", "detector"):
        raise InputError(f"background matching per must be 'visit' or 'detector', got {per!r}")
    if int(order) < 0 or int(bin_size) < 2 or int(stride) < 1:
        raise InputError(f"background matching needs order >= 0, bin_size >= 2 and stride >= 1, got {order}, {bin_size}, {stride}")
    ny, nx = area.shape
    grid = Box(0, 0, nx, ny)
    visits = [k[0] for k in keys]
    cover: dict[Hashable, int] = {}
    for (_, _, _, _, ok), v in zip(pieces, visits, strict=True):
        cover[v] = cover.get(v, 0) + int(ok.sum())
    if reference is None:
        reference = max(cover, key=lambda v: cover[v])
    elif reference not in cover:
        raise InputError(
            f"background matching reference visit {reference!r} is not among the inputs on the grid "
            f"(visits {sorted(cover, key=str)}); pass one of them or None"
        )

    # The statistics use every ``stride``-th pixel of each axis: the fields are smooth, and
    # neighbouring warp pixels share input pixels, so the rest adds little but time.
    st = int(stride)
    sny, snx = -(-ny // st), -(-nx // st)
    area_s = area[::st, ::st]

    def strided(sub: Box, a: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
        oy, ox = (-sub.y0) % st, (-sub.x0) % st
        part = a[oy::st, ox::st]
        gy, gx = (sub.y0 + oy) // st, (sub.x0 + ox) // st
        return (slice(gy, gy + part.shape[0]), slice(gx, gx + part.shape[1])), part

    # float32 planes: the differences are of skies, summed per bin in float64 by _bin_means,
    # so single precision (6e-8 of a value) is far inside the 1e-6-of-the-sky budget, and
    # halves the memory traffic of these full-grid passes.
    ref = np.full((sny, snx), np.nan, dtype=np.float32)
    ref_var = np.full((sny, snx), np.nan, dtype=np.float32)
    for (sub, image, var, _, ok), v in zip(pieces, visits, strict=True):
        if v == reference:
            sl, ok_s = strided(sub, ok)
            np.copyto(ref[sl], strided(sub, image)[1], where=ok_s, casting="same_kind")
            np.copyto(ref_var[sl], strided(sub, var)[1], where=ok_s, casting="same_kind")
    ref_ok = np.isfinite(ref)
    inv_area = (1.0 / area_s).astype(np.float32)
    inv_area2 = inv_area * inv_area

    groups: dict[Hashable, list[int]] = {}
    for i, (v, d) in enumerate(keys):
        groups.setdefault(v if per == "visit" else (v, d), []).append(i)

    fields: dict = {}
    n_bins: dict = {}
    orders: dict = {}
    for key, members in groups.items():
        visit = key if per == "visit" else key[0]
        bbox = grid if per == "visit" else pieces[members[0]][0]
        if visit == reference:
            fields[key], n_bins[key], orders[key] = ConstantField(0.0, bbox), 0, 0
            continue
        b = max(1, int(bin_size) // st)
        diff = _padded((sny, snx), b)
        dvar = _padded((sny, snx), b)
        for i in members:
            sub, image, var, _, ok = pieces[i]
            sl, im = strided(sub, image)
            # usable: the piece's own pixels (finite, positive variance) where the reference has one
            good = strided(sub, ok)[1] & ref_ok[sl]
            d = np.subtract(im, ref[sl], dtype=np.float32)
            d *= inv_area[sl]
            dv = np.add(strided(sub, var)[1], ref_var[sl], dtype=np.float32)
            dv *= inv_area2[sl]
            np.copyto(diff[sl], d, where=good)
            np.copyto(dvar[sl], dv, where=good)
        xc, yc, level, err = _bin_means(diff, dvar, (sny, snx), b, nsigma, int(grow), min_fraction)
        try:
            field, used = _fit(xc * st, yc * st, level, err, int(order), bbox)
        except ValueError:
            raise InputError(
                f"background matching: {_name(key)} overlaps reference visit {reference!r} in only "
                f"{level.size} usable bins of {bin_size}x{bin_size} pixels, too few to fit its "
                "background; choose another match_reference, a smaller match_bin, or leave it out"
            ) from None
        fields[key], n_bins[key], orders[key] = field, int(level.size), used
    return MatchedBackgrounds(fields=fields, reference=reference, n_bins=n_bins, order=orders)


def _name(key) -> str:
    return f"visit {key[0]!r} detector {key[1]!r}" if isinstance(key, tuple) else f"visit {key!r}"


def _union(boxes: Sequence[Box]) -> Box:
    x0 = min(b.x0 for b in boxes)
    y0 = min(b.y0 for b in boxes)
    x1 = max(b.x1 for b in boxes)
    y1 = max(b.y1 for b in boxes)
    return Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1)


def subtract_matched(pieces: Sequence[Piece], keys, matched: MatchedBackgrounds, area: np.ndarray,
                     per: str = "visit") -> list[Piece]:
    """The pieces with their visit's (or detector's) field × pixel area subtracted."""
    ny, nx = area.shape
    filled: dict = {}
    out = []
    for piece, (v, d) in zip(pieces, keys, strict=True):
        sub, image, var, mask, ok = piece
        key = v if per == "visit" else (v, d)
        field = matched.fields[key]
        if isinstance(field, ConstantField) and field.evaluate(0.0, 0.0) == 0.0:
            out.append(piece)
            continue
        if per == "visit":
            if key not in filled:  # one fill of the whole grid per visit (fast low-rank fill)
                # float32: the field is a sky difference, 6e-8 of it is far below 1e-6 of the sky
                filled[key] = (field.fill(np.float32) if field.bbox == Box(0, 0, nx, ny)
                               else field_on(field, Box(0, 0, nx, ny)))
            model = filled[key][_slices(sub)]
        else:
            model = field_on(field, sub)
        model = model * area[_slices(sub)]
        image = np.subtract(image, model, out=model)
        out.append((sub, image, var, mask, ok))
    return out


def fit_stack_background(image: np.ndarray, variance: np.ndarray, area: np.ndarray, order: int,
                         bin_size: int = 64, nsigma: float = 3.0, grow: int = 2) -> BoundedField:
    """One background of a stacked fluence image, fitted on its surface brightness.

    The stack's fluence is divided by the pixel area, averaged in bins of ``bin_size`` pixels
    with sources clipped as in :func:`match_backgrounds`, and fitted with a Chebyshev field of
    ``order`` (clipping bins spoiled by extended sources) over the whole grid: a scale much
    larger than a detector. Returns the field in nJy/arcsec² on coadd-grid pixels.
    """
    ny, nx = image.shape
    b = int(bin_size)
    sb = _padded((ny, nx), b)
    sbvar = _padded((ny, nx), b)
    with np.errstate(invalid="ignore", divide="ignore"):
        sb[:ny, :nx] = image / area
        sbvar[:ny, :nx] = variance / (area * area)
    bad = ~(np.isfinite(sb) & np.isfinite(sbvar))
    sb[bad] = np.nan
    xc, yc, level, err = _bin_means(sb, sbvar, (ny, nx), b, nsigma, int(grow), 0.25)
    try:
        field, _ = _fit(xc, yc, level, err, int(order), Box(0, 0, nx, ny))
    except ValueError:
        raise InputError(
            f"coadd background: only {level.size} usable bins of {bin_size}x{bin_size} pixels; "
            "lower coadd_background_order or the bin size"
        ) from None
    return field
