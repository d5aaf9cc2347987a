"""Integer pixel bounding boxes.

Pixel centres are on integers (0-based, astropy ``origin=0``); a box of width ``w`` starting at
``x0`` covers the continuous interval ``[x0 - 0.5, x0 + w - 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["Box"]


#: Largest |coordinate| or size of a Box (the int32 range of FITS images and of NumPy indexing).
_MAX_COORD = 2**31 - 1

@dataclass(frozen=True, slots=True)
class Box:
    """An integer pixel bounding box ``Box(x0, y0, width, height)``.

    Parameters
    ----------
    x0, y0 : int
        First pixel column and row (inclusive), 0-based.
    width, height : int
        Number of columns and rows; both must be positive.

    Examples
    --------
    >>> box = Box(0, 0, 2048, 4096)
    >>> box.shape
    (4096, 2048)
    >>> box.x1, box.y1
    (2047, 4095)
    """

    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise InputError(f"Box.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
            # Beyond 2**31 pixels no image exists; such values come from damaged headers, and
            # they would overflow the float arithmetic of the fields defined on the box.
            if abs(int(value)) > _MAX_COORD:
                raise InputError(f"Box.{name} = {int(value)} is out of range (|value| <= 2**31 - 1)")
        if self.width <= 0 or self.height <= 0:
            raise InputError(
                f"Box width and height must be positive, got {self.width}x{self.height}"
            )

    @classmethod
    def from_shape(cls, shape: tuple[int, int], x0: int = 0, y0: int = 0) -> Box:
        """Box covering an array of ``shape = (ny, nx)`` whose first pixel is ``(x0, y0)``."""
        ny, nx = shape
        return cls(x0, y0, int(nx), int(ny))

    @property
    def x1(self) -> int:
        """Last pixel column (inclusive)."""
        return self.x0 + self.width - 1

    @property
    def y1(self) -> int:
        """Last pixel row (inclusive)."""
        return self.y0 + self.height - 1

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(height, width)`` of an image covering the box."""
        return (self.height, self.width)

    @property
    def area(self) -> int:
        """Number of pixels."""
        return self.width * self.height

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """Continuous extent ``(xmin, xmax, ymin, ymax)`` in pixels: pixel edges, not centres."""
        return (self.x0 - 0.5, self.x0 + self.width - 0.5, self.y0 - 0.5, self.y0 + self.height - 0.5)

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)`` of the box in pixel coordinates."""
        return (self.x0 + 0.5 * (self.width - 1), self.y0 + 0.5 * (self.height - 1))

    def contains(self, x, y) -> np.ndarray:
        """Whether points lie within the continuous extent of the box (vectorised)."""
        xmin, xmax, ymin, ymax = self.extent
        x = np.asarray(x)
        y = np.asarray(y)
        return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or ``None`` if they do not overlap."""
        x0 = max(self.x0, other.x0)
        y0 = max(self.y0, other.y0)
        x1 = min(self.x1, other.x1)
        y1 = min(self.y1, other.y1)
        if x1 < x0 or y1 < y0:
            return None
        return Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1)

    def pixel_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """1-D arrays of pixel-centre x (columns) and y (rows) coordinates."""
        return (
            np.arange(self.x0, self.x0 + self.width, dtype=np.float64),
            np.arange(self.y0, self.y0 + self.height, dtype=np.float64),
        )
