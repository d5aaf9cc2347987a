"""Safe file input and output shared by every layer.

Writes go to a temporary file in the target directory and are renamed into place, so an
interrupted write never leaves a partial file; reads turn every failure into an InputError.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from astropy.io import fits

from .errors import InputError, OutputError, PhotocalibError

__all__ = ["atomic_write", "atomic_write_hdulist", "compression", "open_fits", "pid_alive",
           "remove_stale_temporaries"]

#: This host, short: temporary files name their writer by host and PID.
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]

#: ``.<target name>.<host>-<pid>.<random>.tmp``, as :func:`atomic_write` names its temporaries.
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (True if it cannot be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, target: str | None = None,
                             recursive: bool = False) -> list[Path]:
    """Remove the temporary files that writers on this host which no longer run left behind.

    Only files named as :func:`atomic_write` names them are considered, and only those of
    a dead process of this host: a live writer's file, or one from another host sharing the
    folder, is kept.

    Parameters
    ----------
    folder : path
        Where to look.
    target : str, optional
        Only the temporaries of this file name.
    recursive : bool
        Look in subfolders too.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    folder = Path(folder)
    pattern = f".{glob_escape(target)}.*.tmp" if target else ".*.tmp"
    removed = []
    try:
        candidates = list(folder.rglob(pattern) if recursive else folder.glob(pattern))
    except OSError:
        return removed
    for item in candidates:
        m = _TMP_NAME.match(item.name)
        if m is None or m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            item.unlink()
            removed.append(item)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with the glob wildcards ``*?[`` made literal."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _file_mode() -> int:
    """Permissions of a newly created file under the process umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False.
    OutputError
        The directory or the file could not be written (an ``OSError`` such as a full disk,
        raised while writing or renaming); ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists; pass overwrite=True to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's host and PID are in the name, so debris of a killed writer can be told
        # from a live writer's file and removed (here, and by `photocalib run`).
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, PhotocalibError):
            raise _output_error(path, exc) from exc
        raise


def _output_error(path: Path, exc: OSError) -> OutputError:
    """An OutputError naming the target and the cause (errno kept), saying nothing was written."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    err = OutputError(f"{path}: could not be written ({reason}); nothing was written there "
                      "(free some space or choose another output location, then rerun)")
    err.errno = exc.errno
    err.filename = str(path)
    return err


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None], overwrite: bool = True) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_write(path, overwrite) as tmp:
        writer(tmp)


def atomic_write_hdulist(hdul: fits.HDUList, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write a FITS HDUList atomically (checksums included)."""
    with atomic_write(path, overwrite) as tmp:
        hdul.writeto(tmp, overwrite=True, checksum=True)


def compression(path: str | os.PathLike) -> str | None:
    """``"gzip"`` or ``"bzip2"`` when the file is compressed as a whole (by its first bytes,
    whatever its name), else None. Tile-compressed ``.fz`` files are plain FITS."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(3)
    except OSError:
        return None
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic == b"BZh":
        return "bzip2"
    if magic == b"PK\x03":
        return "zip"
    return None


def _check_compressed(hdul: fits.HDUList, path: Path, kind: str) -> None:
    """InputError unless a gzip/bzip2 FITS file decompresses to its end.

    The sizes on disk say nothing about the FITS structure inside; reading the last HDU's
    data runs the decompressor through the whole stream, which fails on a cut-short file.
    """
    try:
        last = hdul[len(hdul) - 1]
        if last.header.get("NAXIS", 0):
            _ = last.data
    except Exception as exc:  # noqa: BLE001 - EOFError, OSError, zlib.error, ValueError...
        raise InputError(f"{path}: damaged {kind}-compressed FITS file ({type(exc).__name__}: "
                         f"{exc}); the file may be truncated (copy it again)") from exc


def _check_complete(hdul: fits.HDUList, path: Path) -> None:
    """InputError unless the HDUs account for the whole file.

    astropy only warns about a file shorter than its headers announce (and reads what is
    there), so a truncated file would otherwise load silently.
    """
    kind = compression(path)
    try:
        n = len(hdul)  # reads every header
        info = hdul.fileinfo(n - 1)
        end = info["datLoc"] + info["datSpan"]
    except Exception as exc:  # noqa: BLE001 - astropy raises many types on a damaged file
        raise InputError(f"{path}: damaged FITS structure ({exc}); the file may be truncated") from exc
    if kind is not None:
        # Sizes are of the decompressed stream; a cut stream fails to decompress instead.
        _check_compressed(hdul, path, kind)
        return
    size = path.stat().st_size
    if size < end:
        raise InputError(f"{path}: truncated: {size} bytes, but its HDUs need {end}; "
                         "the file was cut short (copy it again)")


def _is_compressed(path: Path) -> bool:
    """Whether the whole file is a gzip, bzip2 or zip stream (astropy opens those too)."""
    return compression(path) is not None


@contextlib.contextmanager
def open_fits(path: str | os.PathLike, **kwargs) -> Iterator[fits.HDUList]:
    """Open a FITS file, turning missing, empty, truncated or non-FITS files into InputError.

    Raises
    ------
    InputError
        The file is missing, a directory, empty, not FITS, fails verification, or is shorter
        than its headers say (truncated).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        hdul = fits.open(path, memmap=kwargs.pop("memmap", False), **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged header raises OSError, ValueError, KeyError, ...
        kind = compression(path)
        if kind is not None:
            raise InputError(f"{path}: damaged {kind}-compressed FITS file ({type(exc).__name__}: "
                             f"{exc}); the file may be truncated (copy it again)") from exc
        raise InputError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    try:
        try:
            hdul.verify("silentfix")
        except Exception as exc:  # noqa: BLE001 - astropy raises VerifyError subclasses and more
            raise InputError(f"{path}: FITS file fails verification ({exc})") from exc
        _check_complete(hdul, path)
        yield hdul
    finally:
        hdul.close()
