"""Fuzzing the readers (FITS images, fields, calibrations, Parquet catalogs, TOML configs, WCS
headers) with hypothesis: random byte mutations, card-value replacements and truncations of valid
files. Whatever comes in, only a PhotocalibError (or a normal return) may come out."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from photocalib.astrometry import SkyWcs
from photocalib.calib import PhotoCalib
from photocalib.errors import PhotocalibError
from photocalib.fields import read_field
from photocalib.fit import ChromaticCorrection, ChromaticCorrectionSet, read_catalog
from photocalib.image import Exposure
from photocalib.pipeline.catalogs import read_reference
from photocalib.pipeline.config import load_config

READERS = {
    "exposure": Exposure.read,
    "field": read_field,
    "calib": PhotoCalib.read,
    "refcat": read_reference,
    "catalog": read_catalog,
    "config": load_config,
    "header": lambda p: SkyWcs.from_header(Path(p).read_bytes().decode("ascii", errors="replace")),
    "chromatic": ChromaticCorrectionSet.read,
}

# A longer campaign: PHOTOCALIB_FUZZ_EXAMPLES=2000 (and PHOTOCALIB_FUZZ_RANDOM=1 for new seeds).
N_EXAMPLES = int(os.environ.get("PHOTOCALIB_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("PHOTOCALIB_FUZZ_RANDOM", "") == ""
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Values a damaged or hand-edited header card may hold.
ODD_VALUES = ["NaN", "-INF", "1e999", "'abc'", "T", "''", "-1", "0", "99999999999999999999",
              "1.0.0", "'RA---TAN-SIP'", "'DEC--ZPN'", "(1, 2)", "", "'     '", "3.5"]

mutations = st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                     min_size=1, max_size=8)


def _call(kind: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            READERS[kind](path)
        except PhotocalibError:
            pass


def _apply(data: bytes, muts, header_only: bool) -> bytes:
    out = bytearray(data)
    span = min(len(out), 2880 * 3) if header_only else len(out)
    for frac, byte in muts:
        out[int(frac * span)] = byte
    return bytes(out)


@pytest.fixture(scope="module")
def header_file(tmp_path_factory, sip_header) -> Path:
    path = tmp_path_factory.mktemp("hdr") / "header.txt"
    path.write_bytes(sip_header.tostring().encode("ascii"))
    return path


@pytest.fixture(scope="module")
def chromatic_file(tmp_path_factory) -> Path:
    """Two detectors' chromatic corrections (linear and quadratic colour terms)."""
    import numpy as np

    from photocalib.fields import ChebyshevField
    from photocalib.geom import Box

    box = Box(0, 0, 64, 48)
    terms = [ChebyshevField(np.array([[0.01, 0.002], [0.001, 0.0]]), box),
             ChebyshevField(np.array([[0.001]]), box)]
    corr = ChromaticCorrectionSet({3: ChromaticCorrection(terms, 0.7, "g-i"),
                                   4: ChromaticCorrection(terms[:1], 0.7, "g-i")})
    path = tmp_path_factory.mktemp("chrom") / "chromatic.fits"
    corr.write(path)
    return path


@pytest.fixture()
def sources(files, header_file, chromatic_file) -> dict[str, Path]:
    return {**files, "header": header_file, "chromatic": chromatic_file}


def _source(kind: str, sources) -> Path:
    return sources[kind]


@pytest.mark.parametrize("kind", list(READERS))
@FUZZ
@given(muts=mutations, header_only=st.booleans())
def test_random_bytes(tmp_path_factory, sources, kind, muts, header_only):
    src = _source(kind, sources)
    path = tmp_path_factory.getbasetemp() / f"fuzz-bytes{src.suffix}"
    path.write_bytes(_apply(src.read_bytes(), muts, header_only))
    _call(kind, path)


@pytest.mark.parametrize("kind", list(READERS))
@FUZZ
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncation(tmp_path_factory, sources, kind, cut):
    src = _source(kind, sources)
    data = src.read_bytes()
    path = tmp_path_factory.getbasetemp() / f"fuzz-cut{src.suffix}"
    path.write_bytes(data[: int(cut * len(data))])
    _call(kind, path)


@pytest.mark.parametrize("kind", ["exposure", "field", "calib", "header", "chromatic"])
@settings(max_examples=N_EXAMPLES + 15, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(picks=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from(ODD_VALUES)),
                      min_size=1, max_size=3))
def test_card_values(tmp_path_factory, sources, kind, picks):
    """Replace the value of random header cards (any HDU) with odd text, keeping the card layout."""
    src = _source(kind, sources)
    data = bytearray(src.read_bytes())
    if kind == "header":
        cards = [i for i in range(0, len(data), 80) if data[i + 8:i + 10] == b"= "]
    else:
        with fits.open(src) as hdul:
            starts = [hdul.fileinfo(i)["hdrLoc"] for i in range(len(hdul))]
            ends = [hdul.fileinfo(i)["datLoc"] for i in range(len(hdul))]
        cards = [i for s, e in zip(starts, ends, strict=True) for i in range(s, e, 80)
                 if data[i + 8:i + 10] == b"= " and data[i:i + 8].strip() not in (b"SIMPLE", b"XTENSION")]
    for frac, value in picks:
        i = cards[int(frac * len(cards))]
        data[i + 10:i + 80] = f"{value:>20}".ljust(70).encode("ascii")
    path = tmp_path_factory.getbasetemp() / f"fuzz-card{src.suffix}"
    path.write_bytes(bytes(data))
    _call(kind, path)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("[]=.'\"\n #abcdefgmnrstuwk_0123456789{},-+eE")),
                    max_size=120))
def test_config_text(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_text("[measure]\n" + text, encoding="utf-8")
    _call("config", path)
