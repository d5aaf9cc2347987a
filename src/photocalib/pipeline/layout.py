"""Where a pipeline run puts its files, and how a rerun knows which work is finished.

Each unit of work (a (visit, detector) pair, the joint fit, the coadd...) writes its outputs
atomically and then a small JSON manifest listing them with sizes and SHA-256 digests; a unit
is finished when its manifest exists and every file it lists is present and intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import InputError

__all__ = ["RunLayout", "fingerprint", "sha256_file", "write_json", "read_json"]


def fingerprint(*parts: Any) -> str:
    """A short SHA-256 of JSON-serialisable parts (configuration, input paths, digests)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

MANIFEST_VERSION = 1


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
