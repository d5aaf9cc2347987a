"""ColourTerm: robust recovery of a known cubic, synthetic terms against direct synthetic
photometry and against the Legacy Surveys' published PS1 → DECam transformations, FITS I/O."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

import photocalib as pc
from photocalib.refcat import (
    ColourTerm,
    blackbody_library,
    read_colour_terms,
    synthetic_ab_mags,
    write_colour_terms,
)

TRUE_CUBIC = (0.02583, -0.07690, 0.02824, -0.00898)   # shape of a real PS1 -> DECam z term


def _simulated_matched_stars(rng, n=100_000, noise=0.020, outlier_fraction=0.02):
    colour = rng.uniform(0.3, 3.0, n)
    delta = np.polynomial.polynomial.polyval(colour, TRUE_CUBIC) + rng.normal(0, noise, n)
    bad = rng.random(n) < outlier_fraction
    # Outliers: blends, variables, mismatches: offsets of 0.1–1 mag either way.
    delta[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(0.1, 1.0, bad.sum())
    return colour, delta, bad


def test_fit_recovers_a_known_cubic_to_1_mmag_with_noise_and_outliers(rng):
    # 100 000 matched stars (a DECam night against PS1: 60 CCDs × ~200 stars × ~8 exposures).
    # The statistical error of a cubic at the ends of the colour range is then ~0.25 mmag
    # (with 50 000 stars this seed's clean-star fit already misses by 1.1 mmag at the blue end).
    colour, delta, bad = _simulated_matched_stars(rng)
    ct = ColourTerm.fit(colour, delta, order=3)
    grid = np.linspace(0.3, 3.0, 271)
    truth = np.polynomial.polynomial.polyval(grid, TRUE_CUBIC)
    err = ct(grid) - truth
    assert np.max(np.abs(err)) <= 0.001, np.max(np.abs(err))
    # As good as an oracle least-squares fit that knows which stars are outliers.
    oracle = ColourTerm.fit(colour[~bad], delta[~bad], order=3, nsigma=np.inf)
    assert np.max(np.abs(err)) <= np.max(np.abs(oracle(grid) - truth)) + 0.0002
    assert ct.order == 3 and ct.method == "fit"
    assert ct.n_rejected >= 0.8 * bad.sum()              # most outliers found
    assert ct.rms == pytest.approx(0.020, rel=0.1)       # the noise, not the outliers
    # An unclipped least-squares fit of the same stars misses by more: the clipping matters.
    plain = ColourTerm.fit(colour, delta, order=3, nsigma=np.inf)
    assert np.max(np.abs(plain(grid) - np.polynomial.polynomial.polyval(grid, TRUE_CUBIC))) > 0.002


def test_fit_uses_weights(rng):
    n = 4000
    colour = rng.uniform(0, 2, n)
    sigma = np.where(rng.random(n) < 0.5, 0.005, 0.1)
    delta = 0.01 + 0.05 * colour + rng.normal(0, sigma)
    weighted = ColourTerm.fit(colour, delta, order=1, weights=1 / sigma**2, nsigma=np.inf)
    unweighted = ColourTerm.fit(colour, delta, order=1, nsigma=np.inf)
    truth = 0.01 + 0.05 * np.linspace(0, 2, 21)
    e_w = np.max(np.abs(weighted(np.linspace(0, 2, 21)) - truth))
    e_u = np.max(np.abs(unweighted(np.linspace(0, 2, 21)) - truth))
    assert e_w < 0.001 and e_w < e_u


def test_evaluation_clips_to_the_valid_range():
    ct = ColourTerm((0.0, 0.1, 0.05), colour_range=(0.0, 2.0))
    assert ct(5.0) == pytest.approx(ct(2.0))
    assert ct(-1.0) == pytest.approx(0.0)
    assert ct.derivative(5.0) == 0.0 and ct.derivative(1.0) == pytest.approx(0.2)


def test_synthetic_term_reproduces_synthetic_photometry_of_seds_outside_the_library():
    """The polynomial from the library predicts the target magnitude of new SEDs."""
    ct = ColourTerm.synthetic("panstarrs-r", "decam2014-r", ("panstarrs-g", "panstarrs-i"),
                              seds=blackbody_library(np.geomspace(3000, 12000, 25)), sed_library="bb25")
    probe = blackbody_library([3333.0, 4567.0, 6100.0, 8888.0])
    colour = synthetic_ab_mags("panstarrs-g", probe) - synthetic_ab_mags("panstarrs-i", probe)
    delta = synthetic_ab_mags("decam2014-r", probe) - synthetic_ab_mags("panstarrs-r", probe)
    np.testing.assert_allclose(ct(colour), delta, atol=0.001)
    assert ct.reference_band == "r" and ct.target_band == "r" and ct.colour_bands == ("g", "i")
    assert ct.meta["sed_library"] == "bb25"


# Legacy Surveys (legacypipe py/legacyzpts/ps1cat.py, ps1_to_decam, from the DES/DECaLS
# photometric reductions): m_DECam − m_PS1 = Σ c_k (g − i)_PS1^k, valid for 0.4 < g − i < 2.7.
LEGACY_PS1_TO_DECAM = {
    "g": (0.00062, 0.03604, 0.01028, -0.00613),
    "r": (0.00495, -0.08435, 0.03222, -0.01140),
    "i": (0.00904, -0.04171, 0.00566, -0.00829),
    "z": (0.02583, -0.07690, 0.02824, -0.00898),
}

#: Measured with the blackbody library and speclite's DES DR1 bandpasses (with atmosphere, as the
#: PS1 curves have), over 0.4 < g − i < 2.31 (the reddest blackbody, 3000 K): largest
#: |synthetic − published| g 0.018, r 0.020, i 0.031, z 0.031 mag; after removing the mean
#: offset (a zero point, absorbed by any calibration) g 0.012, r 0.013, i 0.028, z 0.027.
#: The published terms change by 0.05–0.15 mag over that range, so the synthetic ones carry
#: 75–90 % of the colour dependence; blackbodies lack the molecular bands of K and M stars.
SHAPE_VS_PUBLISHED_MAX = {"g": 0.015, "r": 0.016, "i": 0.034, "z": 0.033}


@pytest.mark.parametrize("band", ["g", "r", "i", "z"])
def test_synthetic_ps1_to_decam_against_the_legacy_surveys_transformation(band):
    ct = ColourTerm.synthetic(f"panstarrs-{band}", f"decamDR1-{band}", ("panstarrs-g", "panstarrs-i"),
                              colour_range=(0.4, 2.7))
    assert ct.colour_range[1] == pytest.approx(2.31, abs=0.01)   # no extrapolation beyond the SEDs
    grid = np.linspace(0.4, ct.colour_range[1], 47)
    published = np.polynomial.polynomial.polyval(grid, LEGACY_PS1_TO_DECAM[band])
    diff = ct(grid) - published
    assert np.max(np.abs(diff)) < 0.035, (band, diff.min(), diff.max())
    assert np.max(np.abs(diff - diff.mean())) < SHAPE_VS_PUBLISHED_MAX[band], (band, diff - diff.mean())
    # The slope (the physics of the passband difference) agrees in sign and size.
    slope_pub = np.polyfit(grid, published, 1)[0]
    slope_syn = np.polyfit(grid, ct(grid), 1)[0]
    assert np.sign(slope_pub) == np.sign(slope_syn) and abs(slope_syn - slope_pub) < 0.03


def test_apply_converts_a_reference_catalog_into_the_target_band():
    ct = ColourTerm((0.01, -0.08, 0.03), reference_band="r", target_band="decam_r",
                    colour_bands=("g", "i"), colour_range=(0.3, 2.5))
    g = np.array([18.0, 19.0, 20.0, 21.0])
    i = np.array([17.0, 17.5, 19.9, 17.0])      # colours 1.0, 1.5, 0.1 (outside), 4.0 (outside)
    r = np.array([17.5, 18.2, 19.95, 19.0])
    ref = Table({"id": np.arange(4), "g_flux": pc.refcat.mag_to_njy(g), "i_flux": pc.refcat.mag_to_njy(i),
                 "r_flux": pc.refcat.mag_to_njy(r), "r_flux_err": pc.refcat.mag_to_njy(r) * 0.01})
    out = ct.apply(ref)
    expect = r + np.polynomial.polynomial.polyval(g - i, ct.coefficients)
    np.testing.assert_allclose(pc.refcat.njy_to_mag(out["decam_r_flux"][:2]), expect[:2], atol=1e-12)
    assert np.isnan(out["decam_r_flux"][2:]).all()
    clipped = ct.apply(ref, outside="clip")
    np.testing.assert_allclose(pc.refcat.njy_to_mag(clipped["decam_r_flux"][3]), r[3] + ct(2.5), atol=1e-12)
    assert out["decam_r_flux"].unit == u.nJy
    assert "decam_r" in out.meta["colour_terms"][0]
    with pytest.raises(pc.InputError, match="z_flux"):
        ColourTerm((0.0,), reference_band="z", target_band="z", colour_bands=("g", "i")).apply(ref)


def test_fits_round_trip_of_one_and_several_terms(tmp_path, rng):
    colour, delta, _ = _simulated_matched_stars(rng, n=2000)
    ct = ColourTerm.fit(colour, delta, reference_band="z", target_band="decam_z", colour_bands=("g", "i"))
    ct.write(tmp_path / "ct.fits")
    back = ColourTerm.read(tmp_path / "ct.fits")
    assert back.coefficients == ct.coefficients and back.colour_range == ct.colour_range
    assert (back.reference_band, back.target_band, back.colour_bands) == ("z", "decam_z", ("g", "i"))
    assert back.rms == pytest.approx(ct.rms, rel=1e-12) and back.n_stars == ct.n_stars
    np.testing.assert_array_equal(back(colour), ct(colour))
    syn = ColourTerm.synthetic("panstarrs-g", "decamDR1-g", ("panstarrs-g", "panstarrs-i"))
    write_colour_terms([ct, syn], tmp_path / "both.fits")
    terms = read_colour_terms(tmp_path / "both.fits")
    assert set(terms) == {"decam_z", "g"}
    assert terms["g"].coefficients == syn.coefficients and terms["g"].meta["target_bandpass"] == "decamDR1-g"
    with pytest.raises(pc.InputError, match="target_band"):
        ColourTerm.read(tmp_path / "both.fits")
    Table({"a": [1]}).write(tmp_path / "other.fits")
    with pytest.raises(pc.InputError, match="COLOURTERM"):
        ColourTerm.read(tmp_path / "other.fits")


def test_fits_round_trip_of_a_published_term_without_an_rms(tmp_path):
    # A published term has no rms (NaN), which a FITS card cannot hold: the card is left out.
    ct = pc.refcat.published_colour_term("gaia-dr2", "decam", "r")
    assert np.isnan(ct.rms)
    ct.write(tmp_path / "pub.fits")
    back = ColourTerm.read(tmp_path / "pub.fits")
    assert back.coefficients == ct.coefficients and back.colour_range == ct.colour_range
    assert (back.reference_band, back.colour_bands, back.method) == (ct.reference_band, ct.colour_bands, ct.method)
    assert np.isnan(back.rms) and back.meta == ct.meta and "→" in back.describe()
    assert back.describe() == ct.describe()


def test_bad_input():
    with pytest.raises(pc.InputError, match="usable stars"):
        ColourTerm.fit([0.1, 0.2, 0.3], [0.0, 0.0, 0.0], order=3)
    with pytest.raises(pc.InputError, match="delta_mag"):
        ColourTerm.fit([0.1, 0.2], [0.0])
    with pytest.raises(pc.InputError, match="speclite"):
        ColourTerm.synthetic("nosuch-r", "decam2014-r", ("panstarrs-g", "panstarrs-i"))


def test_to_reference_gives_the_fitters_form_in_the_target_band():
    from pathlib import Path

    chunk = Path(__file__).parents[1] / "data" / "decam-cp" / "testcase6" / "gaia" / "chunk-03687.fits"
    gaia = pc.refcat.read_reference(chunk)
    ct = ColourTerm((0.1, -0.2, 0.05), reference_band="G", target_band="decam_r", colour_bands=("BP", "RP"),
                    colour_range=(0.5, 2.0))
    plain = pc.refcat.to_reference(gaia, "G")
    assert plain.colnames == ["id", "ra", "dec", "flux", "flux_err"] and plain.meta["band"] == "G"
    same_band = pc.refcat.to_reference(gaia, colour_term=ct, convert=False)
    np.testing.assert_allclose(same_band["colour"], pc.refcat.njy_to_mag(np.asarray(gaia["BP_flux"]))[
        np.isin(gaia["id"], same_band["id"])] - pc.refcat.njy_to_mag(np.asarray(gaia["RP_flux"]))[
        np.isin(gaia["id"], same_band["id"])])
    converted = pc.refcat.to_reference(gaia, colour_term=ct)
    assert converted.meta["band"] == "decam_r"
    inside = (same_band["colour"] >= 0.5) & (same_band["colour"] <= 2.0)
    assert len(converted) == inside.sum() > 100
    np.testing.assert_allclose(
        pc.refcat.njy_to_mag(converted["flux"]),
        pc.refcat.njy_to_mag(same_band["flux"][inside]) + ct(same_band["colour"][inside]), atol=1e-12)
    # The same conversion as fit_joint(colour_term=) makes, on a DataFrame too.
    df = same_band.to_pandas()
    back = pc.refcat.convert_reference(df, ct)
    np.testing.assert_allclose(back["flux"].to_numpy(), np.asarray(converted["flux"]))
    with pytest.raises(pc.InputError, match="colour"):
        pc.refcat.convert_reference(plain, ct)


def test_from_polynomial_re_expresses_a_vega_transformation_for_ab_fluxes():
    """A Vega-based published term applied to AB fluxes gives the published target magnitude."""
    zp = pc.refcat.GAIA_ZERO_POINTS["gaia-dr3"]
    off = {b: zp["ab"][b] - zp["vega"][b] for b in ("G", "BP", "RP")}
    p = (0.11, -0.29, 0.05, 0.1, -0.02)
    ct = ColourTerm.from_polynomial(p, reference_band="G", target_band="r", colour_bands=("BP", "RP"),
                                    colour_range=(-0.6, 4.1), reference_to_ab=off["G"],
                                    colour_to_ab=off["BP"] - off["RP"], source="test")
    g_vega, bp_vega, rp_vega = 17.0, 17.6, 16.4
    published = g_vega + np.polynomial.polynomial.polyval(bp_vega - rp_vega, p)
    ref = Table({"G_flux": [pc.refcat.mag_to_njy(g_vega, offset=off["G"])],
                 "BP_flux": [pc.refcat.mag_to_njy(bp_vega, offset=off["BP"])],
                 "RP_flux": [pc.refcat.mag_to_njy(rp_vega, offset=off["RP"])]})
    out = ct.apply(ref)
    assert pc.refcat.njy_to_mag(out["r_flux"][0]) == pytest.approx(published, abs=1e-10)
    assert ct.colour_range == pytest.approx((-0.6 + off["BP"] - off["RP"], 4.1 + off["BP"] - off["RP"]))


def test_published_terms_reproduce_the_legacy_surveys_formulas():
    """PS1: m_DECam = m_PS1 + P(g − i); Gaia: m_DECam = G + P(BP − RP) in Gaia's Vega magnitudes
    (legacypipe's gaia_to_decam r coefficients typed in here from its source)."""
    g, i, r = 18.3, 17.1, 17.6
    ref = Table({"g_flux": [pc.refcat.mag_to_njy(g)], "i_flux": [pc.refcat.mag_to_njy(i)],
                 "r_flux": [pc.refcat.mag_to_njy(r)]})
    ct = pc.refcat.published_colour_term("ps1-dr2", "decam", "r", target_band="decam_r")
    expect = r + np.polynomial.polynomial.polyval(g - i, LEGACY_PS1_TO_DECAM["r"])
    assert pc.refcat.njy_to_mag(ct.apply(ref)["decam_r_flux"][0]) == pytest.approx(expect, abs=1e-10)

    zhou_r = (0.1139078673, -0.2868955307, 0.0013196434, 0.1029151074, 0.1196710702, -0.3729031390,
              0.1859874242, 0.1370162451, -0.1808580848, 0.0803219195, -0.0180218196, 0.0020584707,
              -0.0000953486)
    zp = pc.refcat.GAIA_ZERO_POINTS["gaia-dr2"]
    G, BP, RP = 15.2, 15.8, 14.5    # Vega, as the DR2 catalog gives them
    ref = Table({f"{b}_flux": [pc.refcat.mag_to_njy(m, offset=zp["ab"][b] - zp["vega"][b])]
                 for b, m in (("G", G), ("BP", BP), ("RP", RP))})
    ct = pc.refcat.published_colour_term("gaia-dr2", "decam", "r")
    expect = G + np.polynomial.polynomial.polyval(BP - RP, zhou_r)
    assert pc.refcat.njy_to_mag(ct.apply(ref)["r_flux"][0]) == pytest.approx(expect, abs=1e-9)
    with pytest.raises(pc.InputError, match="no published colour term"):
        pc.refcat.published_colour_term("gaia-dr3", "hsc", "r")


def test_colour_term_for_prefers_a_published_term_and_falls_back_to_synthetic():
    meta = {"system": "gaia-dr2", "bandpasses": {"G": "gaiadr2-G", "BP": "gaiadr2-BP", "RP": "gaiadr2-RP"}}
    assert pc.refcat.colour_term_for(meta, "decamDR1-z", "z").method == "published"
    hsc = pc.refcat.colour_term_for(meta, "hsc2017-r", "r")
    assert hsc.method == "synthetic" and hsc.reference_band == "G" and hsc.target_band == "r"
    with pytest.raises(pc.InputError, match="no colour term"):
        pc.refcat.colour_term_for({"system": "skymapper", "bandpasses": {}}, "hsc2017-r", "r")
