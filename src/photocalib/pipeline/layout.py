"""Where a pipeline run puts its files, and how a rerun knows which work is finished.

Each unit of work (a (visit, detector) pair, the joint fit, the coadd...) writes its outputs
atomically and then a small JSON manifest listing them with sizes and SHA-256 digests; a unit
is finished when its manifest exists and every file it lists is present and intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write, pid_alive
from ..errors import InputError, PhotocalibError

__all__ = ["RunLayout", "RunLock", "RunBusyError", "content_fingerprint", "fingerprint",
           "sha256_file", "write_json", "read_json"]


def fingerprint(*parts: Any) -> str:
    """A short SHA-256 of JSON-serialisable parts (configuration, input paths, digests)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

MANIFEST_VERSION = 1

#: Files up to this size are hashed whole; larger ones by their headers and a strided sample.
FULL_HASH_LIMIT = 64 << 20


def content_fingerprint(path: str | os.PathLike, full_limit: int = FULL_HASH_LIMIT,
                        samples: int = 1024, block: int = 4096) -> str:
    """A digest of what a file holds, not of where it is.

    Files up to ``full_limit`` bytes are hashed whole (SHA-256). Larger ones are hashed by
    their size, modification time, first MiB (the FITS headers of a raw file, a Parquet
    file's header) and last block (a Parquet footer), and ``samples`` blocks of ``block``
    bytes at evenly strided offsets, so a rewritten or edited input is recognised without
    reading gigabytes; moving or renaming the file, or naming it by another path, does not
    change the digest of a small file.

    Parameters
    ----------
    path : path
        The file.

    Returns
    -------
    str
        32 hexadecimal digits.

    Raises
    ------
    InputError
        If the file cannot be read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a").write_bytes(b"x" * 10); _ = (d / "b").write_bytes(b"x" * 10)
    >>> content_fingerprint(d / "a") == content_fingerprint(d / "b")
    True
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        st = path.stat()
        digest.update(f"size={st.st_size};".encode())
        with open(path, "rb") as handle:
            if st.st_size <= full_limit:
                while data := handle.read(1 << 20):
                    digest.update(data)
            else:
                digest.update(f"mtime={st.st_mtime_ns};".encode())
                digest.update(handle.read(1 << 20))
                step = max(block, (st.st_size - (1 << 20)) // samples)
                for offset in range(1 << 20, st.st_size, step):
                    handle.seek(offset)
                    digest.update(handle.read(block))
                handle.seek(max(0, st.st_size - block))
                digest.update(handle.read(block))
    except OSError as exc:
        raise InputError(f"{path}: cannot be read to fingerprint it ({exc.strerror or exc})") from exc
    return digest.hexdigest()[:32]


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc``), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # The command name (field 2) may hold spaces; the fields after it do not.
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class RunBusyError(PhotocalibError):
    """Another live run holds the run folder's lock."""


class RunLock:
    """Exclusive ownership of a run folder: ``root/.photocalib.lock`` names its holder.

    The lock file holds the host, PID and start time of the run that owns the folder; it is
    created atomically (complete or absent) and removed when the run ends. A second run
    refuses with :class:`RunBusyError` naming the holder, or, given ``wait``, waits for it. A
    lock left by a process that no longer exists on this host is taken over.

    Parameters
    ----------
    root : path
        The run folder.
    wait : float
        Seconds to wait for a busy folder (0: refuse at once; ``math.inf``: wait for ever).
    poll : float
        Seconds between checks while waiting.
    """

    NAME = ".photocalib.lock"

    def __init__(self, root: str | os.PathLike, wait: float = 0.0, poll: float = 1.0) -> None:
        self.root = Path(root)
        self.path = self.root / self.NAME
        self.wait = float(wait)
        self.poll = float(poll)
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "pid_start": _process_start(os.getpid()),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": os.urandom(8).hex()}
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The lock's record, ``{}`` when unreadable, None when there is no lock."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}

    def _stale(self, rec: dict[str, Any]) -> bool:
        if not rec:
            # Unreadable: only ours could be half-written, and ours are written whole; an
            # old unreadable lock is debris.
            try:
                return time.time() - self.path.stat().st_mtime > 60.0
            except FileNotFoundError:
                return True
        if rec.get("host") != self.record["host"]:
            return False  # a process on another machine cannot be checked from here
        try:
            pid = int(rec.get("pid", -1))
        except (TypeError, ValueError):
            return True
        if not pid_alive(pid):
            return True
        # A live PID may be another process that reused the dead holder's number.
        started = rec.get("pid_start")
        now = _process_start(pid)
        return started is not None and now is not None and started != now

    def _try_create(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".photocalib.lock.{os.getpid()}.{self.record['token']}.tmp"
        tmp.write_text(json.dumps(self.record) + "\n", encoding="utf-8")
        try:
            os.link(tmp, self.path)  # atomic, and fails if the lock exists
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring).

        Raises
        ------
        RunBusyError
            Another live run holds it (after ``wait`` seconds).
        OutputError, OSError
            The folder cannot be written.
        """
        deadline = time.monotonic() + self.wait
        while True:
            if self._try_create():
                self.held = True
                return self
            rec = self.holder()
            if rec is None:
                continue  # released between our two looks
            if self._stale(rec):
                # Move the dead holder's lock aside under a unique name: of two runs taking
                # over at once, only one rename succeeds; the other finds the new lock.
                aside = self.root / f".photocalib.lock.stale.{os.getpid()}.{self.record['token']}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path, aside)
                    aside.unlink()
                continue
            if time.monotonic() >= deadline:
                who = (f"host {rec.get('host', '?')}, PID {rec.get('pid', '?')}, started "
                       f"{rec.get('started', '?')}") if rec else "an unreadable lock"
                raise RunBusyError(
                    f"{self.root}: in use by another photocalib run ({who}); wait for it to end, "
                    f"rerun with --wait to queue behind it, or delete {self.path} if that run "
                    "is dead")
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())) or self.poll)

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.held and (self.holder() or {}).get("token") == self.record["token"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (sorted keys, so equal content gives equal bytes)."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning failures into InputError naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from exc


@dataclass(frozen=True)
class RunLayout:
    """The directory tree of one pipeline run.

    ``root/``
        ``run.json`` (configuration, inputs, timings), ``config.toml``;
        ``exposures/visit-V/det-D.fits`` (background-subtracted fluence, counts);
        ``catalogs/visit-V/det-D.parquet`` (sources, instrumental then calibrated);
        ``calib/single/visit-V/det-D.fits`` and ``calib/legacy/...`` (single-detector);
        ``calib/colour_term/visit-V/det-D.fits`` (the colour term applied to a survey reference);
        ``calib/joint/`` (the joint solution and a PhotoCalib per (visit, detector));
        ``calexp/visit-V/det-D.fits`` (calibrated fluence, nJy);
        ``warps/visit-V/det-D.fits``; ``coadd/coadd.fits``; ``report/index.html``;
        ``manifest/STEP/UNIT.json`` (what each finished unit wrote).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- per-unit paths --------------------------------------------------------------------------
    @staticmethod
    def unit_name(visit: int, detector: int) -> str:
        return f"visit-{int(visit):06d}/det-{int(detector):03d}"

    def exposure(self, visit: int, detector: int) -> Path:
        return self.root / "exposures" / f"{self.unit_name(visit, detector)}.fits"

    def catalog(self, visit: int, detector: int) -> Path:
        return self.root / "catalogs" / f"{self.unit_name(visit, detector)}.parquet"

    def single_calib(self, visit: int, detector: int, legacy: bool = False) -> Path:
        sub = "legacy" if legacy else "single"
        return self.root / "calib" / sub / f"{self.unit_name(visit, detector)}.fits"

    def survey_calib(self, visit: int, detector: int) -> Path:
        """The calibration a processed image came with (its survey's zero point), FLUENCE."""
        return self.root / "calib" / "survey" / f"{self.unit_name(visit, detector)}.fits"

    def colour_term(self, visit: int, detector: int) -> Path:
        """The colour term that carried a survey reference into this image's band (FITS,
        :meth:`photocalib.refcat.ColourTerm.read`); absent when none was needed."""
        return self.root / "calib" / "colour_term" / f"{self.unit_name(visit, detector)}.fits"

    def joint_calib(self, visit: int, detector: int) -> Path:
        return self.root / "calib" / "joint" / f"{self.unit_name(visit, detector)}.fits"

    def calexp(self, visit: int, detector: int) -> Path:
        return self.root / "calexp" / f"{self.unit_name(visit, detector)}.fits"

    def calibrated_catalog(self, visit: int, detector: int) -> Path:
        return self.root / "catalogs" / f"{self.unit_name(visit, detector)}.calibrated.parquet"

    def warp(self, visit: int, detector: int) -> Path:
        return self.root / "warps" / f"{self.unit_name(visit, detector)}.fits"

    # -- whole-run paths ---------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def joint_dir(self) -> Path:
        return self.root / "calib" / "joint"

    @property
    def joint_solution(self) -> Path:
        return self.joint_dir / "solution.fits"

    @property
    def joint_observations(self) -> Path:
        """The matched observations partitioned by star, for a streamed joint fit (large runs)."""
        return self.joint_dir / "observations"

    @property
    def tables(self) -> Path:
        """Small summary tables the report reads (Parquet)."""
        return self.root / "tables"

    @property
    def coadd(self) -> Path:
        return self.root / "coadd" / "coadd.fits"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> Path:
        return self.report_dir / "index.html"

    # -- manifests --------------------------------------------------------------------------------
    def manifest(self, step: str, unit: str) -> Path:
        return self.root / "manifest" / step / f"{unit.replace('/', '_')}.json"

    def mark_done(self, step: str, unit: str, outputs: Iterable[str | os.PathLike],
                  info: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        """Record that ``unit`` of ``step`` finished, listing its outputs (written last).

        ``fingerprint`` identifies what the outputs were made from (configuration and inputs);
        :meth:`is_done` given another fingerprint reports the unit as not done.
        """
        files = {}
        for out in outputs:
            path = Path(out)
            rel = os.path.relpath(path, self.root)
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        write_json(self.manifest(step, unit),
                   {"version": MANIFEST_VERSION, "step": step, "unit": unit, "files": files,
                    "info": info or {}, "fingerprint": fingerprint})

    def manifest_digest(self, step: str, unit: str) -> str:
        """SHA-256 of a unit's manifest ('' when absent): changes whenever the unit is redone."""
        path = self.manifest(step, unit)
        return sha256_file(path) if path.is_file() else ""

    def is_done(self, step: str, unit: str, verify: bool = True,
                fingerprint: str | None = None) -> bool:
        """Whether ``unit`` of ``step`` finished: its manifest exists and its files are intact.

        With ``verify`` the SHA-256 digests are checked too (a truncated or altered file makes
        the unit unfinished, so a rerun redoes it); with ``fingerprint`` the unit must have
        been made from the same configuration and inputs.
        """
        path = self.manifest(step, unit)
        if not path.is_file():
            return False
        try:
            data = read_json(path)
            files = data["files"]
        except (InputError, KeyError, TypeError):
            return False
        if fingerprint is not None and data.get("fingerprint") != fingerprint:
            return False
        for rel, meta in files.items():
            target = self.root / rel
            try:
                if target.stat().st_size != meta["size"]:
                    return False
                if verify and sha256_file(target) != meta["sha256"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        return True

    def done_info(self, step: str, unit: str) -> dict[str, Any]:
        """The ``info`` a finished unit recorded (empty if none)."""
        try:
            return dict(read_json(self.manifest(step, unit)).get("info", {}))
        except InputError:
            return {}

    def clear(self, step: str) -> None:
        """Forget every finished unit of ``step`` (used by ``--force``)."""
        folder = self.root / "manifest" / step
        if folder.is_dir():
            for item in folder.glob("*.json"):
                item.unlink()
