"""``reproject``: a drop-in for ``reproject.reproject_interp`` that can conserve fluence.

Takes what ``reproject_interp`` takes and returns ``(array, footprint)``; with
``conserve="fluence"`` (the default) each star keeps its flux, the mode reproject users asked for.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..astrometry import SkyWcs
from ..errors import InputError
from ..geom import Box
from ..image.mask import MaskPlane
from .mapping import DEFAULT_TOLERANCE, PixelMapping
from .warp import KERNELS, warp_arrays

__all__ = ["reproject"]

#: The pixel mapping's root tile (output pixels): blocks are whole numbers of tiles, so the
#: tiles, and so the interpolated mapping, are the same whether the output is done in blocks.
_TILE = 128

#: Output block side (pixels) of the blockwise path; a multiple of the mapping's root tile.
DEFAULT_BLOCK = 16 * _TILE

#: Input pixels read around the mapped footprint of an output block (Lanczos-3 support,
#: the grown mask bits and the mapping's tolerance).
_MARGIN = 6

_CONSERVE = {"fluence": "fluence", "surface_brightness": "surface_brightness"}


def _is_dask(a: Any) -> bool:
    return type(a).__module__.startswith("dask.") and hasattr(a, "chunks")


def _wcs_from(obj: Any, what: str) -> SkyWcs:
    """A SkyWcs from an astropy WCS, a FITS header or a SkyWcs."""
    if isinstance(obj, SkyWcs):
        return obj
    if isinstance(obj, fits.Header):
        obj = WCS(obj)
    if isinstance(obj, WCS):
        if obj.naxis != 2 or obj.celestial.naxis != 2:
            raise InputError(f"{what} must be a 2-D celestial WCS, got {obj.naxis} axes")
        return SkyWcs(obj)
    raise InputError(
        f"{what} must be an astropy WCS or FITS header (or a photocalib SkyWcs), got {type(obj).__name__}"
    )


def _parse_input(input_data: Any, hdu_in: int | str | None) -> tuple[Any, SkyWcs]:
    """(2-D array-like, celestial WCS) from the kinds of input ``reproject_interp`` accepts."""
    if isinstance(input_data, (str, os.PathLike)):
        path = os.fspath(input_data)
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = hdul[hdu_in if hdu_in is not None else 0]
                data = np.asarray(hdu.data)
                header = hdu.header.copy()
        except (OSError, KeyError, IndexError) as exc:
            raise InputError(f"reproject: cannot read HDU {hdu_in!r} of {path}: {exc}") from exc
        if data is None or data.ndim != 2:
            raise InputError(f"reproject: HDU {hdu_in!r} of {path} holds no 2-D image; pass hdu_in=")
        return data, _wcs_from(header, f"the WCS of {path}")
    if isinstance(input_data, fits.HDUList):
        return _parse_input(input_data[hdu_in if hdu_in is not None else 0], None)
    if isinstance(input_data, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        if input_data.data is None or input_data.data.ndim != 2:
            raise InputError(f"reproject: HDU {input_data.name!r} holds no 2-D image")
        return input_data.data, _wcs_from(input_data.header, f"the WCS of HDU {input_data.name!r}")
    if hasattr(input_data, "data") and hasattr(input_data, "wcs") and not isinstance(input_data, tuple):
        if input_data.wcs is None:
            raise InputError("reproject: the NDData has no wcs; attach one or pass (array, wcs)")
        return input_data.data, _wcs_from(input_data.wcs, "NDData.wcs")
    if isinstance(input_data, Sequence) and len(input_data) == 2:
        data, wcs = input_data
        return data, _wcs_from(wcs, "the WCS of (array, wcs)")
    raise InputError(
        "reproject: input_data must be a FITS file name, an HDU or HDUList, an (array, WCS or header) "
        f"tuple, or an NDData; got {type(input_data).__name__}"
    )


def _output_wcs(output_projection: Any, shape_out) -> tuple[SkyWcs, tuple[int, int]]:
    if isinstance(output_projection, fits.Header):
        wcs = _wcs_from(output_projection, "output_projection")
        if shape_out is None:
            try:
                shape_out = (int(output_projection["NAXIS2"]), int(output_projection["NAXIS1"]))
            except KeyError:
                raise InputError("reproject: the output header has no NAXIS1/NAXIS2; pass shape_out=") from None
    else:
        wcs = _wcs_from(output_projection, "output_projection")
        if shape_out is None:
            array_shape = getattr(output_projection, "array_shape", None)
            if array_shape is None:
                raise InputError("reproject: the output WCS has no array shape; pass shape_out=(ny, nx)")
            shape_out = tuple(array_shape)
    try:
        ny, nx = (int(v) for v in shape_out)
    except (TypeError, ValueError):
        raise InputError(f"reproject: shape_out must be (ny, nx), got {shape_out!r}") from None
    if ny <= 0 or nx <= 0:
        raise InputError(f"reproject: shape_out must be positive, got {shape_out!r}")
    return wcs, (ny, nx)


def _threads(parallel: bool | int) -> int:
    import numba

    if parallel is True:
        return max(1, int(numba.config.NUMBA_NUM_THREADS))
    if parallel is False:
        return 1
    n = int(parallel)
    if n < 1:
        raise InputError(f"reproject: parallel must be True, False or a positive number of threads, got {parallel!r}")
    return min(n, int(numba.config.NUMBA_NUM_THREADS))


class _Plan:
    """The shared pieces of a reprojection: WCSs, the mapping function and area fields."""

    def __init__(self, src: SkyWcs, dst: SkyWcs, in_shape, out_shape, conserve: str, kernel: str,
                 tolerance: float, threads: int) -> None:
        self.src, self.dst = src, dst
        self._local = threading.local()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.mode, self.kernel, self.tolerance, self.threads = conserve, kernel, tolerance, threads

    def wcs_pair(self) -> tuple[SkyWcs, SkyWcs]:
        """This thread's own copies of the input and output WCSs.

        astropy's WCS mutates its wcslib state while transforming, so one object used from
        several threads at once (Dask's threaded scheduler running blocks side by side) can
        return wrong coordinates (astropy/astropy#19174); each thread gets a deep copy, made
        once.
        """
        pair = getattr(self._local, "pair", None)
        if pair is None:
            pair = self._local.pair = (copy.deepcopy(self.src), copy.deepcopy(self.dst))
        return pair

    def input_box(self, bx0: int, by0: int, bnx: int, bny: int) -> Box | None:
        """The input pixels an output block reads (None: the block maps outside the input)."""
        # The block's edge pixels (dense enough for any smooth mapping) mapped to the input.
        n = max(bnx, bny)
        t = np.linspace(0.0, 1.0, min(n, 257))
        ex = np.concatenate([bx0 + t * (bnx - 1), bx0 + t * (bnx - 1), np.full(t.size, bx0),
                             np.full(t.size, bx0 + bnx - 1.0)])
        ey = np.concatenate([np.full(t.size, by0), np.full(t.size, by0 + bny - 1.0), by0 + t * (bny - 1),
                             by0 + t * (bny - 1)])
        src, dst = self.wcs_pair()
        ra, dec = dst.pixel_to_sky(ex, ey)
        xi, yi = src.sky_to_pixel(ra, dec)
        ok = np.isfinite(xi) & np.isfinite(yi)
        if not ok.any():
            return None
        ny, nx = self.in_shape
        x0 = max(int(np.floor(xi[ok].min())) - _MARGIN, 0)
        x1 = min(int(np.ceil(xi[ok].max())) + _MARGIN + 1, nx)
        y0 = max(int(np.floor(yi[ok].min())) - _MARGIN, 0)
        y1 = min(int(np.ceil(yi[ok].max())) + _MARGIN + 1, ny)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0)

    def warp_block(self, data: np.ndarray, in_box: Box, bx0: int, by0: int, bnx: int, bny: int):
        """Warp ``data`` (the input pixels of ``in_box``) onto the output block; (values, footprint)."""
        src, dst = self.wcs_pair()
        ix0, iy0 = in_box.x0, in_box.y0

        def func(x: np.ndarray, y: np.ndarray):
            ra, dec = dst.pixel_to_sky(x + bx0, y + by0)
            xi, yi = src.sky_to_pixel(ra, dec)
            return xi - ix0, yi - iy0

        mapping = PixelMapping.build(func, (bny, bnx), tolerance=self.tolerance, input_shape=data.shape)
        src_area = dst_area = None
        if self.mode == "fluence":
            src_area = src.pixel_area_field(in_box).fill()
            dst_area = dst.pixel_area_field(Box(bx0, by0, bnx, bny)).fill()
        result = warp_arrays(
            data, src, dst, (bny, bnx), kernel=self.kernel, mode=self.mode, src_area=src_area,
            dst_area=dst_area, mapping=mapping, origin=(bx0, by0), threads=self.threads,
        )
        footprint = ((result.mask & np.uint32(MaskPlane.NO_DATA)) == 0).astype(np.float64)
        return result.image, footprint


def _blocks(shape: tuple[int, int], block: tuple[int, int]):
    ny, nx = shape
    by, bx = block
    for y0 in range(0, ny, by):
        for x0 in range(0, nx, bx):
            yield x0, y0, min(bx, nx - x0), min(by, ny - y0)


def reproject(
    input_data: Any,
    output_projection: Any,
    shape_out: tuple[int, int] | None = None,
    *,
    conserve: str = "fluence",
    kernel: str = "lanczos3",
    parallel: bool | int = True,
    hdu_in: int | str | None = None,
    block_size: int | tuple[int, int] | None = None,
    output_array: Any = None,
    output_footprint: Any = None,
    return_footprint: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
):
    """Reproject an image onto another WCS, as ``reproject.reproject_interp`` does, conserving flux.

    Switching from reproject is one line: ``reproject_interp(inp, wcs_out, shape_out)`` becomes
    ``pc.warp.reproject(inp, wcs_out, shape_out, conserve="surface_brightness")`` for the same
    interpolation of values (a surface brightness) or ``conserve="fluence"`` (the default) for
    images whose pixels hold flux: each value is divided by its input pixel's area, interpolated
    and multiplied by the output pixel's area (areas from the WCS Jacobians, distortion
    included), so every star keeps its flux and the total is conserved
    (:mod:`photocalib.warp.warp` gives the mathematics).

    Parameters
    ----------
    input_data : str, path, HDU, HDUList, (array, WCS or Header), or NDData
        The image and its celestial WCS, as ``reproject_interp`` takes them. The array may be a
        Dask array: it is then read by blocks, never whole.
    output_projection : astropy WCS or Header
        The output grid.
    shape_out : tuple of int, optional
        ``(ny, nx)``; taken from the header's NAXIS or the WCS's ``array_shape`` if omitted.
    conserve : {"fluence", "surface_brightness"}
        What the resampling conserves: the flux of sources (pixels hold flux per pixel) or the
        surface brightness (pixels hold flux per solid angle; as ``reproject_interp``).
    kernel : {"lanczos3", "bilinear"}
        Normalised separable interpolation kernel.
    parallel : bool or int
        Threads for the resampling (True: all of numba's threads; False: one).
    hdu_in : int or str, optional
        The HDU of a file or HDUList (default 0).
    block_size : int or (int, int), optional
        Output block side in pixels, rounded up to a multiple of 128 (the pixel mapping's tile,
        so that the blocks' pixels equal those of the whole-image warp). The output is computed
        one block at a time, each reading only the input pixels it maps onto; given a Dask
        input without it, 2048.
    output_array, output_footprint : array-like, optional
        Where to write the result (any array supporting slice assignment: a NumPy array or
        memmap, a Zarr array), block by block; they are returned.
    return_footprint : bool
        Return ``(array, footprint)`` (default) or just the array.
    tolerance : float
        Largest error of the interpolated pixel mapping, input pixels.

    Returns
    -------
    array, footprint
        The reprojected image (NaN where there is no data; float32 for float32 input, else
        float64) and the footprint (1 where the output has data, 0 elsewhere). With a Dask
        input and no ``output_array``, both are lazy Dask arrays computed block by block.

    Raises
    ------
    InputError
        Unreadable input, no WCS, bad shape, kernel or ``conserve``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> import photocalib as pc
    >>> w_in = WCS(naxis=2); w_in.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w_in.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]; w_in.wcs.crpix = [32.5, 32.5]
    >>> w_in.wcs.crval = [150.0, 2.0]
    >>> w_out = w_in.deepcopy(); w_out.wcs.cdelt = [-0.3 / 3600, 0.3 / 3600]
    >>> w_out.wcs.crpix = [24.5, 24.5]
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> star = 1e4 * np.exp(-((xx - 31.3) ** 2 + (yy - 32.1) ** 2) / (2 * 3.0**2)) / (2 * np.pi * 3.0**2)
    >>> out, footprint = pc.warp.reproject((star, w_in), w_out, (48, 48))
    >>> round(float(np.nansum(out)))  # the star's flux, 1e4, in (0.2")² and in (0.3")² pixels
    10000
    >>> bool(np.isnan(out[footprint == 0]).all())  # the 14.4" output overhangs the 12.8" input
    True
    """
    if conserve not in _CONSERVE:
        raise InputError(f"reproject: conserve must be 'fluence' or 'surface_brightness', got {conserve!r}")
    if str(kernel).lower() not in KERNELS:
        raise InputError(f"reproject: unknown kernel {kernel!r}; use one of {sorted(KERNELS)}")
    data, wcs_in = _parse_input(input_data, hdu_in)
    if getattr(data, "ndim", None) != 2:
        raise InputError(f"reproject: the input must be a 2-D image, got shape {getattr(data, 'shape', None)}")
    wcs_out, shape = _output_wcs(output_projection, shape_out)
    threads = _threads(parallel)
    lazy_in = _is_dask(data)
    if block_size is None:
        block = (DEFAULT_BLOCK, DEFAULT_BLOCK) if lazy_in else shape
    else:
        by, bx = (block_size, block_size) if np.ndim(block_size) == 0 else block_size
        if int(by) < 1 or int(bx) < 1:
            raise InputError(f"reproject: block_size must be positive, got {block_size!r}")
        # Whole tiles of the pixel mapping: each block's mapping is then the whole image's.
        block = (-(-int(by) // _TILE) * _TILE, -(-int(bx) // _TILE) * _TILE)
    if not lazy_in:
        data = np.asarray(data)
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
    dtype = np.float32 if np.dtype(data.dtype) == np.float32 else np.float64
    plan = _Plan(wcs_in, wcs_out, data.shape, shape, _CONSERVE[conserve], str(kernel).lower(),
                 float(tolerance), threads)

    def compute(x0: int, y0: int, bnx: int, bny: int, block_data: Any = None, in_box: Box | None = None):
        if in_box is None:
            in_box = plan.input_box(x0, y0, bnx, bny)
        if in_box is None:
            return np.full((bny, bnx), np.nan, dtype), np.zeros((bny, bnx))
        if block_data is None:
            block_data = data[in_box.y0 : in_box.y0 + in_box.height, in_box.x0 : in_box.x0 + in_box.width]
        return plan.warp_block(np.asarray(block_data), in_box, x0, y0, bnx, bny)

    if lazy_in and output_array is None:
        import dask
        import dask.array as da

        rows_img, rows_fp = [], []
        for y0 in range(0, shape[0], block[0]):
            row_img, row_fp = [], []
            for x0 in range(0, shape[1], block[1]):
                bnx, bny = min(block[1], shape[1] - x0), min(block[0], shape[0] - y0)
                in_box = plan.input_box(x0, y0, bnx, bny)
                piece = None
                if in_box is not None:
                    piece = data[in_box.y0 : in_box.y0 + in_box.height, in_box.x0 : in_box.x0 + in_box.width]
                task = dask.delayed(compute, nout=2, pure=True)(x0, y0, bnx, bny, piece, in_box)
                row_img.append(da.from_delayed(task[0], (bny, bnx), dtype=dtype))
                row_fp.append(da.from_delayed(task[1], (bny, bnx), dtype=np.float64))
            rows_img.append(row_img)
            rows_fp.append(row_fp)
        out, footprint = da.block(rows_img), da.block(rows_fp)
        return (out, footprint) if return_footprint else out

    out = output_array if output_array is not None else np.empty(shape, dtype)
    footprint = output_footprint if output_footprint is not None else (
        np.empty(shape) if return_footprint else None)
    if tuple(out.shape) != shape or (footprint is not None and tuple(footprint.shape) != shape):
        raise InputError(f"reproject: output_array/output_footprint must have shape {shape}")
    for x0, y0, bnx, bny in _blocks(shape, block):
        img, fp = compute(x0, y0, bnx, bny)
        out[y0 : y0 + bny, x0 : x0 + bnx] = img
        if footprint is not None:
            footprint[y0 : y0 + bny, x0 : x0 + bnx] = fp
    return (out, footprint) if return_footprint else out

