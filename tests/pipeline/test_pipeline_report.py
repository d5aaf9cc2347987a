"""The HTML report: it renders in headless Chromium, every image loads, missing pieces are noted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from pipeline_chromium import chromium_path, probe_page

from photocalib.pipeline import plots
from photocalib.pipeline.layout import RunLayout, write_json
from photocalib.pipeline.report import write_report

needs_chromium = pytest.mark.skipif(
    chromium_path() is None,
    reason="Debian's chromium is not installed (run `make chromium` or "
    "`apt-get install -y chromium`); the report-rendering test needs it")


def _fake_run(root, rng, matched=True):
    run = RunLayout(root)
    run.tables.mkdir(parents=True)
    rows = []
    for det in range(4):
        j, i = np.meshgrid(np.arange(5), np.arange(4))
        xi = (det % 2) * 600.0 + j * 120.0
        eta = (det // 2) * 500.0 + i * 120.0
        area = 0.028 * (1 - 1e-7 * (xi**2 + eta**2))
        rows.append(pd.DataFrame({"detector": det, "row": i.ravel(), "col": j.ravel(),
                                  "xi": xi.ravel(), "eta": eta.ravel(), "area": area.ravel(),
                                  "star_flat_mmag": rng.normal(0, 1, i.size),
                                  "star_flat_mmag__monolithic": rng.normal(0, 1, i.size),
                                  "truth_star_flat_mmag": rng.normal(0, 1, i.size)}))
    pd.concat(rows).to_parquet(run.tables / "focal_plane.parquet")
    pd.DataFrame({"visit": [3, 1, 2], "grey_mmag": [10.0, -5.0, 2.0], "grey_mmag__monolithic": [9.0, -4.0, 1.0],
                  "truth_mmag": [9.5, -5.2, 2.4]}).to_parquet(run.tables / "grey.parquet")
    n = 300
    res = []
    for name, scale in (("jacobian-aware", 1.0), ("legacy", 20.0)):
        xi, eta = rng.uniform(0, 1200, n), rng.uniform(0, 1000, n)
        r = np.hypot(xi - 600, eta - 500) / 60
        res.append(pd.DataFrame({"calibration": name, "xi": xi, "eta": eta, "radius_arcmin": r,
                                 "colour": rng.normal(0.6, 0.3, n),
                                 "residual_mmag": rng.normal(0, 1, n) + scale * r / 10,
                                 "against": "truth"}))
    pd.concat(res).to_parquet(run.tables / "residuals.parquet")
    write_json(run.tables / "headline.json", [{"name": "RMS", "value": 1.25, "unit": "mmag", "floor": 0.75}])
    write_json(run.run_json, {"timings": {"process": 12.5}, "joint_model": "separated"})
    run.coadd.parent.mkdir(parents=True)
    img = rng.normal(0, 1, (64, 80)).astype(np.float32)
    img[30:34, 40:44] += 50
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(img)]
    if matched:
        from photocalib import Box, ChebyshevField

        for visit, c in ((1, [[0.0]]), (2, [[3.0, 1.0], [-2.0, 0.0]]), (3, [[-4.0, 0.5], [1.0, 0.0]])):
            hdu = ChebyshevField(c, Box(0, 0, 80, 64)).to_hdu(name=f"BGMATCH_{visit}")
            hdu.header["BGVISIT"] = str(visit)
            hdu.header["BGREF"] = "1"
            hdus.append(hdu)
        hdus.append(ChebyshevField([[10.0, 2.0], [1.0, 0.0]], Box(0, 0, 80, 64)).to_hdu(name="BGCOADD"))
    fits.HDUList(hdus).writeto(run.coadd)
    return run


def test_report_writes_every_plot(tmp_path, rng):
    run = _fake_run(tmp_path / "run", rng)
    index = write_report(run.root)
    text = index.read_text()
    pngs = sorted(p.name for p in run.report_dir.glob("*.png"))
    assert pngs == sorted(["area.png", "starflat.png", "grey.png", "residual_map.png",
                           "residual_radius.png", "residual_colour.png", "background_matching.png",
                           "coadd.png"])
    for name in pngs:
        assert (run.report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{name}'" in text
    assert "Not available" not in text
    assert "time: process" in text and "12.5" in text
    # the noise floor beside the RMS, and the excess above it in quadrature: sqrt(1.25² - 0.75²) = 1
    assert "noise floor" in text and "0.75 (RMS − floor in quadrature: 1)" in text


def test_report_says_when_the_coadd_was_not_matched(tmp_path, rng):
    run = _fake_run(tmp_path / "run", rng, matched=False)
    text = write_report(run.root).read_text()
    assert "without background matching" in text


def test_report_notes_missing_pieces(tmp_path):
    (tmp_path / "empty").mkdir()
    index = write_report(tmp_path / "empty")
    text = index.read_text()
    assert "<img" not in text
    assert text.count("Not available") == 9  # 8 figures + the headline table


def test_report_of_missing_dir_is_input_error(tmp_path):
    from photocalib.errors import InputError

    with pytest.raises(InputError, match="not a directory"):
        write_report(tmp_path / "nope")


@needs_chromium
def test_report_renders_in_chromium(tmp_path, rng):
    run = _fake_run(tmp_path / "run", rng)
    index = write_report(run.root)
    n_images, n_loaded, dom = probe_page(index)
    assert n_images == 8
    assert n_loaded == n_images, dom[-3000:]
    assert "photocalib report" in dom


@needs_chromium
def test_probe_detects_a_broken_image(tmp_path):
    # The check must be able to fail: a page whose image is not a PNG reports it unloaded.
    (tmp_path / "bad.png").write_bytes(b"not a png")
    page = tmp_path / "index.html"
    page.write_text("<!DOCTYPE html><html><head><title>t</title></head><body>"
                    "<img src='bad.png'></body></html>")
    n_images, n_loaded, _ = probe_page(page)
    assert (n_images, n_loaded) == (1, 0)


def test_binned_median_matches_numpy(rng):
    x = rng.uniform(0, 1, 1001)
    y = rng.normal(0, 1, 1001)
    centres, medians = plots._binned(x, y, 5)
    edges = np.quantile(x, np.linspace(0, 1, 6))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 4)
    for b in range(5):
        sel = np.sort(y[idx == b])
        # lower median for even counts, the middle for odd counts
        assert medians[b] == sel[(sel.size - 1) // 2]
        assert centres[b] == pytest.approx(x[idx == b].mean())


def test_headline_json_roundtrip(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1.5], "b": 1}


def test_binned_medians_and_their_errors(rng):
    # independent check: numpy medians per equal-count bin, and the error of a median of
    # Gaussian values (sqrt(pi/2) sigma / sqrt(n)) against the scatter of many realisations
    x = rng.uniform(-1, 2, 4000)
    centres, medians, errors, counts = plots.binned_medians(x, 3.0 * x + rng.normal(0, 2.0, x.size), 8)
    edges = np.quantile(x, np.linspace(0, 1, 9))
    assert counts.sum() == x.size and centres.size == 8
    np.testing.assert_allclose(errors, 1.2533 * 2.0 / np.sqrt(counts), rtol=0.15)
    trials = np.array([plots.binned_medians(x, rng.normal(0, 2.0, x.size), 8)[1] for _ in range(200)])
    np.testing.assert_allclose(trials.std(axis=0), 1.2533 * 2.0 / np.sqrt(counts), rtol=0.2)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 7)
    y = 3.0 * x
    for b in range(8):
        assert abs(np.median(y[idx == b]) - 3.0 * centres[b]) < 0.1
