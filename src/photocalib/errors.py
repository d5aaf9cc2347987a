"""The errors photocalib raises on purpose.

Every error a user can provoke is a :class:`PhotocalibError`; its message names the input
(path, HDU, keyword, column, visit/detector) and says what to do about it.
"""

from __future__ import annotations

__all__ = ["PhotocalibError", "InputError", "ImageKindError"]


class PhotocalibError(Exception):
    """Base class of every error photocalib raises on purpose."""


class InputError(PhotocalibError, ValueError):
    """A bad file, header, table, configuration or value.

    The message names the offending input (a path, HDU, keyword, column, visit or detector)
    and the fix.
    """


class ImageKindError(PhotocalibError, TypeError):
    """An operation was given the wrong kind of image (fluence vs surface brightness).

    The message says which conversion to call, e.g. ``exposure.to_fluence()``.
    """
