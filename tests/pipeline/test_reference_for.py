"""The pipeline's reference for one exposure from a survey catalog: the legacypipe Gaia chunk
carried into DECam r by the published Gaia → DECam colour term, with the colour the term used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import photocalib as pc
from photocalib.pipeline.catalogs import reference_for

CHUNK = Path(__file__).parents[1] / "data" / "decam-cp" / "testcase6" / "gaia" / "chunk-03687.fits"


def test_gaia_chunk_becomes_decam_r_with_the_colour_term_colour():
    ref, note = reference_for(CHUNK, "r", bandpass="decam2014-r", mjd=58467.2)
    gaia = pc.refcat.read_reference(CHUNK, epoch=2000.0 + (58467.2 - 51544.5) / 365.25)
    ct = pc.refcat.published_colour_term("gaia-dr2", "decam", "r")
    expect = ct.apply(gaia)
    keep = np.isfinite(np.asarray(expect["r_flux"]))
    np.testing.assert_array_equal(ref["ref_id"].to_numpy(), np.asarray(gaia["id"])[keep])
    np.testing.assert_allclose(ref["flux"].to_numpy(), np.asarray(expect["r_flux"])[keep], rtol=1e-12)
    colour, _ = ct.colour_of(gaia)
    np.testing.assert_allclose(ref["colour"].to_numpy(), colour[keep], rtol=1e-12)
    assert ref.attrs["colour_name"] == "BP − RP (gaia-dr2, AB)"
    assert ct.describe() in note and "Zhou 2020" in note


def test_a_catalog_in_nJy_needs_no_colour_term(tmp_path):
    from astropy.table import Table

    Table({"id": [1, 2], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "r_flux": [100.0, 200.0]}).write(tmp_path / "r.fits")
    ref, note = reference_for(tmp_path / "r.fits", "r")
    assert "colour" not in ref.columns and note == "reference fluxes in nJy as given"
    with pytest.raises(pc.InputError):
        reference_for(CHUNK, "r")     # a survey catalog without a bandpass to carry it into r
