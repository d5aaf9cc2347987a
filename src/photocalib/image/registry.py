"""The extra HDUs an Exposure file may carry, each read and written by whoever registered it.

Like astropy's ``io.registry``: a higher layer (``calib`` for the ``PHOTOCAL`` HDU) registers
its reader and writer here, so this layer reads and writes them without importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

__all__ = ["HduFormat", "register_hdu", "hdu_format", "hdu_format_for", "registered_hdus"]


@dataclass(frozen=True)
class HduFormat:
    """How one kind of object lives in one named HDU of an Exposure file.

    Attributes
    ----------
    extname : str
        The HDU's EXTNAME (``"PHOTOCAL"``).
    cls : type
        The class of the objects it holds.
    reader : callable
        ``reader(hdu, where) -> object``; raises InputError naming ``where`` for a bad HDU.
    writer : callable
        ``writer(obj, extname) -> astropy HDU``.
    """

    extname: str
    cls: type
    reader: Callable[[Any, str], Any]
    writer: Callable[[Any, str], Any]


_BY_NAME: dict[str, HduFormat] = {}


def register_hdu(extname: str, cls: type, reader: Callable[[Any, str], Any],
                 writer: Callable[[Any, str], Any]) -> None:
    """Register how objects of ``cls`` are read from and written to the HDU ``extname``.

    Registering the same EXTNAME again replaces the earlier entry (a reload of the module).

    Examples
    --------
    >>> from photocalib.image.registry import hdu_format
    >>> hdu_format("PHOTOCAL").cls.__name__
    'PhotoCalib'
    """
    name = extname.upper()
    _BY_NAME[name] = HduFormat(name, cls, reader, writer)


def hdu_format(extname: str) -> HduFormat | None:
    """The format registered for the HDU ``extname``, or None."""
    return _BY_NAME.get(extname.upper())


def hdu_format_for(obj: Any, what: str) -> HduFormat:
    """The format that writes ``obj``; InputError naming ``what`` when none does."""
    for fmt in _BY_NAME.values():
        if isinstance(obj, fmt.cls):
            return fmt
    raise InputError(f"{what}: no HDU format is registered for a {type(obj).__name__}; register "
                     "one with photocalib.image.registry.register_hdu")


def registered_hdus() -> tuple[str, ...]:
    """The EXTNAMEs with a registered format."""
    return tuple(_BY_NAME)
