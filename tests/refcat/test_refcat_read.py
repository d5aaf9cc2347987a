"""read_reference against the real legacypipe Gaia chunk, astropy's units and space motion,
and hand-built tables in the column layouts of PS1 DR2, ATLAS-RefCat2, SkyMapper and Gaia XP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import Distance, SkyCoord
from astropy.table import Table
from astropy.time import Time

import photocalib as pc
from photocalib.refcat import GAIA_ZERO_POINTS, read_reference

CHUNK = Path(__file__).parents[1] / "data" / "decam-cp" / "testcase6" / "gaia" / "chunk-03687.fits"


def _ab_njy(mag):
    # DESIGN.md: m_AB = -2.5 log10(f / 3631 Jy). astropy's ABmag is the -48.60 cgs definition
    # (3630.78 Jy); test_ab_convention_agrees_with_astropy bounds the difference.
    return (3631 * u.Jy * 10 ** (-0.4 * np.asarray(mag, float))).to_value(u.nJy)


def test_ab_convention_agrees_with_astropy():
    m = np.linspace(5, 30, 11)
    ours = pc.refcat.mag_to_njy(m)
    np.testing.assert_allclose(ours, _ab_njy(m), rtol=1e-14)
    astropy_ab = (m * u.ABmag).to_value(u.nJy)
    assert np.max(np.abs(2.5 * np.log10(ours / astropy_ab))) < 1e-4   # below 0.1 mmag
    np.testing.assert_allclose(pc.refcat.njy_to_mag(ours), m, rtol=1e-14)


def test_gaia_chunk_is_dr2_in_ab_njy():
    raw = Table.read(CHUNK)
    ref = read_reference(CHUNK)
    assert ref.meta["system"] == "gaia-dr2"           # ref_epoch 2015.5
    assert len(ref) == len(raw) == 897
    assert ref.colnames[:3] == ["id", "ra", "dec"]
    np.testing.assert_array_equal(ref["id"], raw["source_id"])
    zp = GAIA_ZERO_POINTS["gaia-dr2"]
    for band, col in (("G", "phot_g_mean_mag"), ("BP", "phot_bp_mean_mag"), ("RP", "phot_rp_mean_mag")):
        expect = _ab_njy(np.asarray(raw[col], float) + zp["ab"][band] - zp["vega"][band])
        np.testing.assert_allclose(ref[f"{band}_flux"], expect, rtol=1e-12)
        foe = np.asarray(raw[col.replace("_mag", "_flux_over_error")], float)
        np.testing.assert_allclose(ref[f"{band}_flux_err"], expect / foe, rtol=1e-12)
    assert ref["G_flux"].unit == u.nJy
    # Without an epoch the positions are the catalogue's own.
    np.testing.assert_array_equal(ref["ra"], raw["ra"])
    assert ref.meta["epoch"] == 2015.5


@pytest.mark.parametrize("release", ["gaia-dr2", "gaia-dr3"])
def test_gaia_vega_to_ab_offsets_match_vega_through_the_gaia_passbands(release):
    """Vega's synthetic AB magnitude (CALSPEC spectrum shipped with GalSim) through speclite's
    Gaia passbands is its Vega magnitude (~0.02–0.03 by Gaia's definition) plus the AB−Vega
    offset: this checks the sign and size of each documented zero-point difference."""
    import galsim
    import speclite.filters

    data = np.loadtxt(Path(galsim.meta_data.share_dir) / "SEDs" / "vega.txt")
    wave_aa, flam = data[:, 0] * 10.0, data[:, 1] / 10.0   # nm -> Å, per nm -> per Å
    zp = GAIA_ZERO_POINTS[release]
    tag = release.replace("gaia-", "gaia")
    vega_mag = []
    for band in ("G", "BP", "RP"):
        filt = speclite.filters.load_filter(f"{tag}-{band}")
        m_ab = float(filt.get_ab_magnitude(flam * u.erg / (u.s * u.cm**2 * u.AA), wave_aa * u.AA))
        vega_mag.append(m_ab - (zp["ab"][band] - zp["vega"][band]))
    # A sign error or a swapped band would be off by 0.1-0.7 mag.
    assert np.all(np.abs(np.array(vega_mag) - 0.03) < 0.025), vega_mag
    if release == "gaia-dr3":
        # DR3's passbands and zero points come from one calibration: Vega's magnitude is the
        # same in the three bands to a few mmag.
        assert np.ptp(vega_mag) < 0.002, vega_mag


def test_epoch_propagation_matches_astropy_apply_space_motion():
    raw = Table.read(CHUNK)
    epoch = Time(58467.21774261, format="mjd")   # the DECam exposure of testcase6 S9 r
    ref = read_reference(CHUNK, epoch=epoch)
    assert ref.meta["epoch"] == pytest.approx(epoch.jyear)
    plx = np.asarray(raw["parallax"], float)
    good = plx > 0.2   # a distance for astropy; the motion does not depend on it without RV
    c = SkyCoord(ra=raw["ra"][good] * u.deg, dec=raw["dec"][good] * u.deg,
                 pm_ra_cosdec=raw["pmra"][good] * u.mas / u.yr, pm_dec=raw["pmdec"][good] * u.mas / u.yr,
                 distance=Distance(parallax=plx[good] * u.mas), radial_velocity=0 * u.km / u.s,
                 obstime=Time(2015.5, format="jyear"))
    moved = c.apply_space_motion(new_obstime=Time(epoch.jyear, format="jyear"))
    got = SkyCoord(ref["ra"][good], ref["dec"][good])
    sep = got.separation(moved).to_value(u.mas)
    assert sep.max() < 0.01, sep.max()
    # And the motion is real: the stars moved by their proper motion × 3.45 yr.
    total = np.hypot(raw["pmra"][good], raw["pmdec"][good]) * (epoch.jyear - 2015.5)
    shift = got.separation(SkyCoord(raw["ra"][good] * u.deg, raw["dec"][good] * u.deg)).to_value(u.mas)
    np.testing.assert_allclose(shift, total, rtol=1e-4, atol=1e-3)


def test_region_from_fits_parquet_and_parquet_dataset_equals_a_brute_force_cone(tmp_path):
    raw = Table.read(CHUNK)
    region = (110.2, 24.0, 0.05)
    full = read_reference(CHUNK)
    inside = SkyCoord(full["ra"], full["dec"]).separation(SkyCoord(region[0] * u.deg, region[1] * u.deg)) \
        <= region[2] * u.deg
    expect = np.sort(np.asarray(full["id"])[inside])
    assert 20 < expect.size < len(full)
    from_fits = read_reference(CHUNK, region=region)
    np.testing.assert_array_equal(np.sort(from_fits["id"]), expect)
    df = raw.to_pandas()
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "gaia.parquet", row_group_size=100)
    np.testing.assert_array_equal(np.sort(read_reference(tmp_path / "gaia.parquet", region=region)["id"]), expect)
    ds_dir = tmp_path / "dataset"
    ds_dir.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(df)), 4)):
        pq.write_table(pa.Table.from_pandas(df.iloc[part]), ds_dir / f"part-{k}.parquet")
    got = read_reference(ds_dir, region=region)
    np.testing.assert_array_equal(np.sort(got["id"]), expect)
    np.testing.assert_allclose(np.sort(got["G_flux"]), np.sort(np.asarray(full["G_flux"])[inside]))


@pytest.mark.slow
def test_region_from_a_hats_catalog_built_by_lsdb(tmp_path):
    lsdb = pytest.importorskip("lsdb")
    raw = Table.read(CHUNK)
    df = raw.to_pandas()
    cat = lsdb.from_dataframe(df, ra_column="ra", dec_column="dec", lowest_order=2, highest_order=9,
                              partition_rows=300)
    cat.to_hats(tmp_path / "gaia_hats", catalog_name="gaia_hats")
    region = (110.2, 24.0, 0.05)
    full = read_reference(CHUNK)
    inside = SkyCoord(full["ra"], full["dec"]).separation(SkyCoord(region[0] * u.deg, region[1] * u.deg)) \
        <= region[2] * u.deg
    got = read_reference(tmp_path / "gaia_hats", region=region)
    assert got.meta["system"] == "gaia-dr2"
    # The cone opens only some of the catalog's HEALPix partitions.
    n_all = len(lsdb.open_catalog(tmp_path / "gaia_hats").get_healpix_pixels())
    n_cone = len(lsdb.open_catalog(tmp_path / "gaia_hats", search_filter=lsdb.ConeSearch(
        region[0], region[1], region[2] * 3600)).get_healpix_pixels())
    assert 1 <= n_cone < n_all
    np.testing.assert_array_equal(np.sort(got["id"]), np.sort(np.asarray(full["id"])[inside]))


def test_ps1_dr2_columns(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    mags = {b: rng.uniform(14, 21, n) for b in "grizy"}
    t = Table({"objID": np.arange(n) + 10**17, "raMean": rng.uniform(10, 11, n), "decMean": rng.uniform(-1, 0, n),
               **{f"{b}MeanPSFMag": mags[b] for b in "grizy"},
               **{f"{b}MeanPSFMagErr": np.full(n, 0.01) for b in "grizy"}})
    t["yMeanPSFMag"][3] = -999.0   # PS1's missing value
    t.write(tmp_path / "ps1.fits")
    ref = read_reference(tmp_path / "ps1.fits")
    assert ref.meta["system"] == "ps1-dr2"
    assert ref.meta["bandpasses"]["r"] == "panstarrs-r"
    for b in "griz":
        np.testing.assert_allclose(ref[f"{b}_flux"], _ab_njy(mags[b]), rtol=1e-12)
        # d(flux) = flux × ln(10)/2.5 × d(mag)
        np.testing.assert_allclose(ref[f"{b}_flux_err"], _ab_njy(mags[b]) * 0.01 * np.log(10) / 2.5, rtol=1e-12)
    assert np.isnan(ref["y_flux"][3]) and np.isfinite(ref["y_flux"][2])
    only = read_reference(tmp_path / "ps1.fits", bands=["g", "i"])
    assert only.colnames == ["id", "ra", "dec", "g_flux", "g_flux_err", "i_flux", "i_flux_err"]


def test_atlas_refcat2_applies_proper_motion_from_2015_5(tmp_path):
    t = Table({"objid": [1, 2], "RA": [150.0, 150.1], "Dec": [2.0, 2.1], "pmra": [100.0, -30.0],
               "pmdec": [-50.0, 10.0], "g": [15.0, 16.0], "dg": [0.005, 0.01], "r": [14.5, 15.6],
               "dr": [0.005, 0.01], "i": [14.3, 0.0], "di": [0.005, 0.0], "z": [14.2, 15.2], "dz": [0.01, 0.01]})
    t.write(tmp_path / "refcat2.fits")
    ref = read_reference(tmp_path / "refcat2.fits", epoch=2025.5)
    assert ref.meta["system"] == "atlas-refcat2"
    np.testing.assert_allclose(ref["r_flux"], _ab_njy([14.5, 15.6]), rtol=1e-12)
    assert np.isnan(ref["i_flux"][1])          # 0 marks a missing magnitude
    c = SkyCoord(ra=t["RA"] * u.deg, dec=t["Dec"] * u.deg, pm_ra_cosdec=t["pmra"] * u.mas / u.yr,
                 pm_dec=t["pmdec"] * u.mas / u.yr, distance=1 * u.kpc, radial_velocity=0 * u.km / u.s,
                 obstime=Time(2015.5, format="jyear")).apply_space_motion(new_obstime=Time(2025.5, format="jyear"))
    assert SkyCoord(ref["ra"], ref["dec"]).separation(c).to_value(u.mas).max() < 0.01


def test_skymapper_columns(tmp_path):
    t = Table({"object_id": [7, 8], "raj2000": [200.0, 200.01], "dej2000": [-40.0, -40.01],
               "g_psf": [16.0, 17.0], "e_g_psf": [0.01, 0.02], "r_psf": [15.5, 16.2], "e_r_psf": [0.01, 0.02]})
    t.write(tmp_path / "sm.fits")
    ref = read_reference(tmp_path / "sm.fits")
    assert ref.meta["system"] == "skymapper"
    np.testing.assert_array_equal(ref["id"], [7, 8])
    np.testing.assert_allclose(ref["g_flux"], _ab_njy([16.0, 17.0]), rtol=1e-12)


def test_gaia_xp_synthetic_photometry_fluxes_in_si_units(tmp_path):
    f_si = np.array([3.2e-30, 1.1e-29])   # W m^-2 Hz^-1
    t = Table({"source_id": [5, 6], "ra": [1.0, 1.001], "dec": [0.5, 0.5], "ref_epoch": [2016.0, 2016.0],
               "pmra": [0.0, 0.0], "pmdec": [0.0, 0.0],
               "phot_g_mean_mag": [17.0, 16.0], "phot_g_mean_flux_over_error": [500.0, 800.0],
               "g_des_flux": f_si, "g_des_flux_error": f_si / 100, "g_des_mag": [0.0, 0.0],
               "r_ps1_flux": f_si * 2, "r_ps1_flux_error": f_si / 50})
    t.write(tmp_path / "xp.fits")
    ref = read_reference(tmp_path / "xp.fits")
    assert ref.meta["system"] == "gaia-xp"
    expect = (f_si * u.W / u.m**2 / u.Hz).to_value(u.nJy)
    np.testing.assert_allclose(ref["g_des_flux"], expect, rtol=1e-12)
    np.testing.assert_allclose(ref["g_des_flux_err"], expect / 100, rtol=1e-12)
    np.testing.assert_allclose(ref["r_ps1_flux"], 2 * expect, rtol=1e-12)
    # Gaia's own G is there too, as DR3 (ref_epoch 2016.0).
    zp = GAIA_ZERO_POINTS["gaia-dr3"]
    np.testing.assert_allclose(ref["G_flux"], _ab_njy(np.array([17.0, 16.0]) + zp["ab"]["G"] - zp["vega"]["G"]))


def test_any_table_with_named_vega_magnitudes_or_fluxes(tmp_path):
    t = Table({"RAJ2000": [10.0, 10.1], "DEJ2000": [5.0, 5.1], "Vmag": [12.0, 13.0], "e_Vmag": [0.02, 0.03],
               "fluxJy": [1e-4, 2e-4], "fluxJy_err": [1e-6, 1e-6]})
    t.write(tmp_path / "mine.ecsv")
    ref = read_reference(tmp_path / "mine.ecsv", bands={"V": "Vmag"}, mag_system="Vega", vega_to_ab={"V": -0.02})
    np.testing.assert_allclose(ref["V_flux"], _ab_njy(np.array([12.0, 13.0]) - 0.02), rtol=1e-12)
    np.testing.assert_allclose(ref["V_flux_err"], _ab_njy(np.array([12.0, 13.0]) - 0.02) * [0.02, 0.03] * np.log(10) / 2.5)
    ref = read_reference(tmp_path / "mine.ecsv", bands={"x": ("fluxJy", "fluxJy_err")}, flux_unit="Jy")
    np.testing.assert_allclose(ref["x_flux"], [1e5, 2e5])
    np.testing.assert_allclose(ref["x_flux_err"], [1e3, 1e3])
    with pytest.raises(pc.InputError, match="vega_to_ab"):
        read_reference(tmp_path / "mine.ecsv", bands={"V": "Vmag"}, mag_system="Vega")


def test_a_table_without_magnitudes_names_the_file_and_what_to_pass(tmp_path):
    path = tmp_path / "positions.fits"
    Table({"ra": [1.0], "dec": [2.0], "name": ["a"]}).write(path)
    with pytest.raises(pc.InputError) as err:
        read_reference(path)
    msg = str(err.value)
    assert str(path) in msg and "bands=" in msg and "system=" in msg
    with pytest.raises(pc.InputError, match="not found"):
        read_reference(tmp_path / "missing.fits")
    with pytest.raises(pc.InputError, match="unknown system"):
        read_reference(CHUNK, system="hipparcos")


def test_pc_refcat_is_reachable_from_the_top_level():
    assert pc.refcat.read_reference is read_reference


def test_a_list_of_chunk_files_reads_into_one_table(tmp_path):
    raw = Table.read(CHUNK)
    raw[:400].write(tmp_path / "a.fits")
    raw[400:].write(tmp_path / "b.fits")
    both = read_reference([tmp_path / "a.fits", tmp_path / "b.fits"], epoch=2019.0)
    whole = read_reference(CHUNK, epoch=2019.0)
    np.testing.assert_array_equal(both["id"], whole["id"])
    np.testing.assert_array_equal(both["ra"], whole["ra"])
    assert both.meta["system"] == "gaia-dr2" and len(both.meta["path"]) == 2


def test_legacypipe_ps1_healpix_files_with_array_columns(tmp_path):
    med = np.array([[17.0, 16.5, 16.3, 16.2, 16.1], [19.0, 18.1, 17.7, 17.5, 17.4]], dtype=np.float32)
    t = Table({"obj_id": [11, 12], "ra": [30.0, 30.01], "dec": [-2.0, -2.0], "median": med,
               "median_err": np.full((2, 5), 0.01, dtype=np.float32), "nmag_ok": np.ones((2, 5), np.int16)})
    t.write(tmp_path / "ps1-01234.fits")
    ref = read_reference(tmp_path / "ps1-01234.fits")
    assert ref.meta["system"] == "ps1-legacypipe"
    np.testing.assert_array_equal(ref["id"], [11, 12])
    for k, b in enumerate("grizy"):
        np.testing.assert_allclose(ref[f"{b}_flux"], _ab_njy(med[:, k].astype(float)), rtol=1e-12)


def test_gaia_fluxes_without_magnitudes_use_the_vega_zero_points(tmp_path):
    raw = Table.read(CHUNK)[:20]
    zp = GAIA_ZERO_POINTS["gaia-dr2"]
    flux_es = 10 ** (-0.4 * (np.asarray(raw["phot_g_mean_mag"], float) - zp["vega"]["G"]))   # e-/s
    t = Table({"source_id": raw["source_id"], "ra": raw["ra"], "dec": raw["dec"], "ref_epoch": raw["ref_epoch"],
               "phot_g_mean_flux": flux_es, "phot_g_mean_flux_over_error": raw["phot_g_mean_flux_over_error"]})
    t.write(tmp_path / "g_only.fits")
    ref = read_reference(tmp_path / "g_only.fits")
    np.testing.assert_allclose(ref["G_flux"], read_reference(CHUNK)["G_flux"][:20], rtol=1e-6)


@pytest.mark.parametrize("centre", [(0.05, 10.0), (359.95, -30.0), (123.0, 89.9)])
def test_region_across_ra_zero_and_at_the_pole(tmp_path, centre):
    rng = np.random.default_rng(3)
    n = 4000
    ra = (centre[0] + rng.uniform(-3, 3, n)) % 360.0
    dec = np.clip(centre[1] + rng.uniform(-0.6, 0.6, n), -90, 90)
    t = Table({"id": np.arange(n), "ra": ra, "dec": dec, "rmag": np.full(n, 18.0)})
    pq.write_table(pa.Table.from_pandas(t.to_pandas()), tmp_path / "c.parquet", row_group_size=500)
    t.write(tmp_path / "c.fits")
    region = (centre[0], centre[1], 0.3)
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(region[0] * u.deg, region[1] * u.deg))
    expect = np.flatnonzero(sep <= region[2] * u.deg)
    assert expect.size > 10
    for name in ("c.parquet", "c.fits"):
        got = read_reference(tmp_path / name, bands={"r": "rmag"}, region=region)
        np.testing.assert_array_equal(np.sort(got["id"]), expect)
