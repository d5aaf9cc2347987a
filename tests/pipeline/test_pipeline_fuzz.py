"""Fuzzing the pipeline's readers: configuration files and tables give a Config/DataFrame or an
InputError, never another exception."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from photocalib.errors import InputError
from photocalib.pipeline.catalogs import read_reference
from photocalib.pipeline.config import Config, config_to_toml, load_config

_SECTIONS = list(Config.model_fields)
_KEYS = sorted({k for s in _SECTIONS for k in getattr(Config(), s).model_dump()} | {"bogus"})

_scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                     st.text(string.ascii_letters + "-_ .:/", max_size=12))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))


def _toml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # 'inf' and '-inf' are TOML floats too
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    return '"' + v + '"'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(_SECTIONS + ["extra"]),
                       st.dictionaries(st.sampled_from(_KEYS), _values, max_size=4), max_size=3))
def test_random_config_is_valid_or_input_error(tmp_path, data):
    text = "\n".join(f"[{sec}]\n" + "\n".join(f"{k} = {_toml_scalar(v)}" for k, v in keys.items())
                     for sec, keys in data.items())
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        cfg = load_config(path)
    except InputError as exc:
        assert str(path) in str(exc)
        return
    # A configuration that validates round-trips through TOML.
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_config(tmp_path, blob):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(blob)
    try:
        load_config(path)
    except InputError:
        pass


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory) -> bytes:
    import pandas as pd

    path = tmp_path_factory.mktemp("pq") / "ref.parquet"
    pd.DataFrame({"ra": [1.0, 2.0], "dec": [0.5, 0.6], "flux": [10.0, 20.0]}).to_parquet(path)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_parquet_reference(tmp_path, parquet_bytes, data):
    blob = bytearray(parquet_bytes)
    # Truncate, or flip some bytes, of a valid file.
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    path = tmp_path / "ref.parquet"
    path.write_bytes(bytes(blob))
    try:
        ref = read_reference(path)
    except InputError:
        return
    assert list(ref.columns)[:5] == ["ref_id", "ra", "dec", "flux", "flux_err"]
