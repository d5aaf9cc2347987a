"""Pipeline configuration: defaults, TOML round trip, and clear errors for bad keys and types."""

from __future__ import annotations

import pytest

from photocalib.errors import InputError
from photocalib.pipeline.config import Config, config_to_toml, load_config


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert cfg.dask.n_workers == 2
    assert cfg.calibration.joint_model == "separated"
    assert cfg.calibration.visit_order == 7 and cfg.calibration.star_flat_order == 3


def test_toml_roundtrip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[calibration]\njoint_model = "reference-free"\nstar_flat_order = 2\n'
                    '[dask]\nscheduler = "tcp://127.0.0.1:8786"\n')
    cfg = load_config(path)
    assert cfg.calibration.joint_model == "reference-free"
    assert cfg.calibration.star_flat_order == 2
    assert cfg.dask.scheduler == "tcp://127.0.0.1:8786"
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize("text, words", [
    ("[calibration]\njoint_modle = 'separated'\n", ["calibration.joint_modle", "unknown key"]),
    ("[nonsense]\na = 1\n", ["nonsense", "unknown key"]),
    ("[dask]\nn_workers = 'two'\n", ["dask.n_workers", "integer", "'two'"]),
    ("[calibration]\njoint_model = 'magic'\n", ["calibration.joint_model", "monolithic", "'magic'"]),
    ("[measure]\nthreshold = -1\n", ["measure.threshold", "greater than 0"]),
    ("[calibration]\njoint_model = 'monolithic'\ngrey_gradient = true\n", ["grey_gradient"]),
    ("not toml ===", ["not valid TOML"]),
])
def test_bad_config_names_the_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_and_binary_config(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError):
        load_config(bad)


def test_overrides_are_validated():
    cfg = Config().with_overrides(dask={"n_workers": 1})
    assert cfg.dask.n_workers == 1
    with pytest.raises(InputError, match="dask.n_workers"):
        Config().with_overrides(dask={"n_workers": 0})
    with pytest.raises(InputError, match="unknown configuration section"):
        Config().with_overrides(bogus={})


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        cfg.dask = None
