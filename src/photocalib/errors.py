"""The errors photocalib raises on purpose.

Every error a user can provoke is a :class:`PhotocalibError`; its message names the input
(path, HDU, keyword, column, visit/detector) and says what to do about it.
"""

from __future__ import annotations

__all__ = ["PhotocalibError", "InputError", "ImageKindError", "OutputError"]


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


class OutputError(PhotocalibError, OSError):
    """A file could not be written (full disk, no permission, a vanished directory).

    Nothing was written: the target path keeps its previous content, or stays absent. It is an
    ``OSError`` too (``errno`` is kept), so code that handles I/O failures still catches it.
    """

    def __str__(self) -> str:
        # OSError would format "[Errno n] strerror: filename" from the attributes; the message
        # given already names the file and the cause.
        return str(self.args[0]) if self.args else super().__str__()
