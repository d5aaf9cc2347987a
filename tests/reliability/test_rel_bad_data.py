"""Bad pixel data and bad tables: NaN/Inf pixels, all pixels masked, catalogs with missing
columns, NaN or negative fluxes, detectors and visits with no stars, fits with too few stars.
Either a documented error naming the input, or finite results with every bad value flagged."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photocalib import background, measure
from photocalib.errors import InputError
from photocalib.fit import fit_joint, fit_single
from photocalib.geom import Box
from photocalib.image import Exposure, ImageKind, MaskPlane

NY, NX = 200, 256
STARS = [(50.0, 50.0), (150.0, 120.0), (200.0, 60.0)]
SKY, NOISE = 100.0, 3.0


@pytest.fixture(scope="module")
def wcs():
    from photocalib.astrometry import SkyWcs
    from photocalib.astrometry.synthetic import hsc_like_sip_header

    return SkyWcs.from_header(hsc_like_sip_header(nx=NX, ny=NY, axis_pixel=(-3000.0, -2000.0)))


def _scene(sky: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.normal(sky, NOISE, (NY, NX))
    yy, xx = np.mgrid[:NY, :NX]
    for cx, cy in STARS:
        img += 5000.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2))
    return img


def _exposure(wcs, image, variance=None, mask=None) -> Exposure:
    if variance is None:
        variance = np.full(image.shape, NOISE**2)
    return Exposure(image, variance=variance, mask=mask, wcs=wcs, kind=ImageKind.SURFACE_BRIGHTNESS,
                    unit="count/arcsec2")


def _assert_bad_values_flagged(phot: Table) -> None:
    bad = ~np.isfinite(np.asarray(phot["instflux"])) | ~np.isfinite(np.asarray(phot["instflux_err"]))
    flags = np.asarray(phot["flags"])
    assert np.all(flags[bad] != 0), f"non-finite photometry without a flag: rows {np.flatnonzero(bad & (flags == 0))}"


def _each_star_once(found) -> None:
    xy = np.column_stack([found["x"], found["y"]])
    assert np.all(np.isfinite(xy)), "detect returned non-finite positions"
    for cx, cy in STARS:
        near = np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) < 6.0
        assert near.sum() <= 1, f"star at ({cx}, {cy}) detected {near.sum()} times"
    assert len(found) <= len(STARS)


# -- images ---------------------------------------------------------------------------------------
def test_background_ignores_a_nan_patch(wcs):
    img = _scene(SKY)
    img[10:40, 100:160] = np.nan
    exp = _exposure(wcs, img)
    field = background.estimate(exp, mesh_size=32)
    model = field.fill()
    assert np.all(np.isfinite(model))
    # The sky is flat at SKY in SB units: within a few noise/sqrt(mesh pixels) everywhere.
    assert np.max(np.abs(model - SKY)) < 0.5


@pytest.mark.parametrize("case", ["all masked", "all nan"])
def test_background_of_an_unusable_image_is_input_error(wcs, case):
    img = _scene(SKY)
    mask = None
    if case == "all masked":
        mask = np.full((NY, NX), int(MaskPlane.BAD), np.uint32)
    else:
        img[:] = np.nan
    with pytest.raises(InputError, match="mask"):
        background.estimate(_exposure(wcs, img, mask=mask), mesh_size=32)


@pytest.mark.parametrize("case", ["all masked", "all nan"])
def test_detection_on_an_unusable_image_finds_nothing(wcs, case):
    img = _scene()
    mask = None
    if case == "all masked":
        mask = np.full((NY, NX), int(MaskPlane.BAD), np.uint32)
    else:
        img[:] = np.nan
    found = measure.detect(_exposure(wcs, img, mask=mask).to_fluence(), 5.0)
    assert len(found) == 0


def test_detection_with_a_masked_patch(wcs):
    img = _scene()
    mask = np.zeros((NY, NX), np.uint32)
    mask[45:56, 45:56] = MaskPlane.BAD  # the first star is under the mask
    found = measure.detect(_exposure(wcs, img, mask=mask).to_fluence(), 5.0)
    xy = np.column_stack([found["x"], found["y"]])
    assert np.all(np.isfinite(xy))
    for cx, cy in STARS[1:]:
        assert np.min(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)) < 0.5


@pytest.mark.parametrize("case", ["nan on star", "all nan", "all masked", "masked star"])
def test_aperture_photometry_flags_every_bad_value(wcs, case):
    img = _scene()
    mask = None
    if case == "nan on star":
        img[48:53, 48:53] = np.nan
    elif case == "all nan":
        img[:] = np.nan
    elif case == "all masked":
        mask = np.full((NY, NX), int(MaskPlane.BAD), np.uint32)
    else:
        mask = np.zeros((NY, NX), np.uint32)
        mask[50, 50] = MaskPlane.SAT
    exp = _exposure(wcs, img, mask=mask).to_fluence()
    x = np.array([s[0] for s in STARS])
    y = np.array([s[1] for s in STARS])
    phot = measure.aperture_photometry(exp, x, y, radius=4.0)
    _assert_bad_values_flagged(phot)
    assert phot["flags"][0] != 0  # the first star is always the damaged one
    if case in ("nan on star", "masked star"):
        assert np.all(phot["flags"][1:] == 0) and np.all(np.isfinite(phot["instflux"][1:]))


@pytest.mark.parametrize("case", ["nan column", "negative variance patch", "nan variance patch"])
def test_detect_survives_local_damage(wcs, case):
    # (an Inf row, a NaN hole on a star and a zero variance: pending/test_rel_pending_data.py)
    img = _scene()
    var = np.full((NY, NX), NOISE**2)
    if case == "nan column":
        img[:, 10] = np.nan
    elif case == "negative variance patch":
        var[40:60, 40:60] = -1.0
    else:
        var[40:60, 40:60] = np.nan
    found = measure.detect(_exposure(wcs, img, variance=var).to_fluence(), 5.0)
    _each_star_once(found)
    xy = np.column_stack([found["x"], found["y"]])
    for cx, cy in STARS[1:]:
        assert np.min(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)) < 0.5


@pytest.mark.parametrize("case", ["inf row", "nan hole on a star"])
def test_detect_treats_non_finite_pixels_as_missing(wcs, case):
    img = _scene()
    if case == "inf row":
        img[100, :] = np.inf
    elif case == "nan hole on a star":
        img[48:53, 48:53] = np.nan
    else:
        img[:, 10] = np.nan
    found = measure.detect(_exposure(wcs, img).to_fluence(), 5.0)
    _each_star_once(found)
    # the stars away from the damage are all found
    xy = np.column_stack([found["x"], found["y"]])
    for cx, cy in STARS[1:]:
        assert np.min(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)) < 0.5


@pytest.mark.parametrize("case", ["zero"])
def test_detect_with_bad_variance(wcs, case):
    var = np.full((NY, NX), 9.0)
    if case == "zero":
        var[:] = 0.0
    elif case == "negative patch":
        var[40:60, 40:60] = -1.0
    else:
        var[40:60, 40:60] = np.nan
    exp = _exposure(wcs, _scene(), variance=var).to_fluence()
    try:
        found = measure.detect(exp, 5.0)
    except InputError as exc:
        assert "variance" in str(exc)
        return
    _each_star_once(found)


@pytest.mark.parametrize("case", ["negative patch", "nan patch", "zero"])
def test_aperture_photometry_with_bad_variance(wcs, case):
    var = np.full((NY, NX), 9.0)
    if case == "zero":
        var[:] = 0.0
    elif case == "negative patch":
        var[40:60, 40:60] = -1.0
    else:
        var[40:60, 40:60] = np.nan
    exp = _exposure(wcs, _scene(), variance=var).to_fluence()
    x = np.array([s[0] for s in STARS])
    y = np.array([s[1] for s in STARS])
    try:
        phot = measure.aperture_photometry(exp, x, y, radius=4.0)
    except InputError as exc:
        assert "variance" in str(exc)
        return
    _assert_bad_values_flagged(phot)
    if case != "zero":
        assert phot["flags"][0] != 0  # its aperture has unusable variance
    else:
        # zero error on a 5000-count star is not a measurement: flagged or refused
        assert np.all((np.asarray(phot["instflux_err"]) > 0) | (np.asarray(phot["flags"]) != 0))


def test_negative_mask_is_refused(wcs):
    with pytest.raises(InputError, match="mask"):
        _exposure(wcs, _scene(), mask=-np.ones((NY, NX), np.int64))


@pytest.mark.parametrize("plane", ["variance", "mask"])
def test_plane_of_the_wrong_shape_names_it(wcs, plane):
    kwargs = {plane: np.zeros((NY - 1, NX))}
    with pytest.raises(InputError, match=plane):
        _exposure(wcs, _scene(), **kwargs)


# -- catalogs and single-detector fits --------------------------------------------------------------
@pytest.fixture()
def matched() -> Table:
    rng = np.random.default_rng(0)
    t = Table({"x": rng.uniform(0, 100, 50), "y": rng.uniform(0, 100, 50), "instflux": rng.uniform(1e3, 1e4, 50)})
    t["instflux_err"] = 0.01 * t["instflux"]
    t["ref_flux"] = 2.0 * t["instflux"]
    t["ref_flux_err"] = 0.01 * t["ref_flux"]
    return t


@pytest.mark.parametrize("column", ["x", "y", "instflux", "instflux_err", "ref_flux"])
def test_single_fit_missing_column_is_named(matched, column):
    matched.remove_column(column)
    with pytest.raises(InputError, match=repr(column)):
        fit_single(matched)


@pytest.mark.parametrize("damage", ["nan instflux", "negative ref", "negative instflux", "nan err", "empty"])
def test_single_fit_with_no_usable_star_is_input_error(matched, damage):
    if damage == "nan instflux":
        matched["instflux"] = np.nan
    elif damage == "negative ref":
        matched["ref_flux"] = -matched["ref_flux"]
    elif damage == "negative instflux":
        matched["instflux"] = -matched["instflux"]
    elif damage == "nan err":
        matched["instflux_err"] = np.nan
    else:
        matched = matched[:0]
    with pytest.raises(InputError, match="usable"):
        fit_single(matched)


def test_single_fit_drops_bad_rows_and_stays_exact(matched):
    matched["instflux"][:5] = np.nan
    matched["ref_flux"][5:10] = -1.0
    matched["instflux"][10:12] = 0.0
    result = fit_single(matched)
    assert result.n_used == 38
    assert result.photo_calib.mean() == pytest.approx(2.0, rel=1e-12)
    assert not result.used[:12].any()


def test_single_fit_too_few_stars_for_the_order(matched):
    matched["instflux"][5:] = np.nan
    with pytest.raises(InputError, match="lower the order"):
        fit_single(matched, order=3, bbox=Box(0, 0, 100, 100))


# -- joint fits -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def joint_small():
    from photocalib.sim.camera import Camera
    from photocalib.sim.catalog import observations_from_truth
    from photocalib.sim.survey import make_survey

    camera = Camera.preset("hsc-like", n_detectors=4)
    survey = make_survey(camera, n_visits=4, seed=4)
    obs, wcs, truth = observations_from_truth(camera, survey, density=6e3, seed=6)
    flux = np.asarray(truth.stars["flux"])
    ref = Table({"star": truth.stars["star"], "flux": flux, "flux_err": 0.01 * flux})
    return obs, wcs, truth, ref


def test_joint_detector_without_stars_is_excluded_or_named(joint_small):
    obs, wcs, truth, ref = joint_small
    det = np.asarray(obs["detector"])
    gone = np.unique(det)[0]
    sol = fit_joint(obs[det != gone], wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=1)
    assert gone not in sol.detectors
    with pytest.raises(InputError, match=f"detector {gone}"):
        sol.photo_calib(sol.visits[0], gone)


def test_joint_visit_without_stars_is_named(joint_small):
    obs, wcs, truth, ref = joint_small
    v = np.asarray(obs["visit"])
    gone = np.unique(v)[0]
    sol = fit_joint(obs[v != gone], wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=1)
    assert gone not in sol.visits
    with pytest.raises(InputError, match=f"visit {gone}"):
        sol.photo_calib(gone, sol.detectors[0])


@pytest.mark.parametrize("damage", ["empty", "negative", "nan"])
def test_joint_with_no_usable_observation(joint_small, damage):
    obs, wcs, truth, ref = joint_small
    o = obs.copy()
    if damage == "empty":
        o = o[:0]
    elif damage == "negative":
        o["instflux"] = -np.abs(o["instflux"])
    else:
        o["instflux_err"] = np.nan
    with pytest.raises(InputError, match="observations"):
        fit_joint(o, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=1)


def test_joint_reference_without_usable_flux(joint_small):
    obs, wcs, truth, ref = joint_small
    r = ref.copy()
    r["flux"] = np.nan
    with pytest.raises(InputError, match="reference"):
        fit_joint(obs, wcs, reference=r, bboxes=truth.bboxes, star_flat_order=1)


def test_joint_too_few_stars_for_the_star_flat_is_excluded(joint_small):
    # 12 observations on one detector cannot constrain a 10-term star flat (order 3).
    obs, wcs, truth, ref = joint_small
    det = np.asarray(obs["detector"])
    sparse = np.unique(det)[-1]
    keep = (det != sparse) | (np.cumsum(det == sparse) <= 12)
    sol = fit_joint(obs[keep], wcs, model="reference-free", bboxes=truth.bboxes, star_flat_order=3)
    assert sparse not in sol.detectors
    assert any(r["what"] == "detector" and f"detector {sparse}" in r["id"] for r in sol.excluded)


@pytest.mark.parametrize("column", ["visit", "detector", "star", "x", "y", "instflux", "instflux_err"])
def test_joint_missing_column_is_named(joint_small, column):
    obs, wcs, truth, ref = joint_small
    o = obs.copy()
    o.remove_column(column)
    with pytest.raises(InputError, match=column):
        fit_joint(o, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=1)


@pytest.mark.parametrize("column", ["star", "flux"])
def test_joint_reference_missing_column_is_named(joint_small, column):
    obs, wcs, truth, ref = joint_small
    r = ref.copy()
    r.remove_column(column)
    with pytest.raises(InputError, match=column):
        fit_joint(obs, wcs, reference=r, bboxes=truth.bboxes, star_flat_order=1)


# -- reference catalogs on disk ----------------------------------------------------------------------
@pytest.mark.parametrize("drop, word", [("ra", "'ra'"), ("dec", "'dec'"), ("flux", "flux")])
def test_reference_file_missing_column_is_named(tmp_path, drop, word):
    import pandas as pd

    from photocalib.pipeline.catalogs import read_reference

    df = pd.DataFrame({"id": [1, 2], "ra": [1.0, 1.1], "dec": [0.0, 0.1], "flux": [1.0, 2.0]})
    path = tmp_path / "ref.parquet"
    df.drop(columns=[drop]).to_parquet(path)
    with pytest.raises(InputError, match=word) as info:
        read_reference(path)
    assert str(path) in str(info.value)


def test_reference_file_with_nan_coordinates_is_refused(tmp_path):
    import pandas as pd

    from photocalib.pipeline.catalogs import read_reference

    path = tmp_path / "ref.parquet"
    pd.DataFrame({"ra": [1.0, np.nan], "dec": [0.0, 0.1], "flux": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(InputError, match="ra/dec") as info:
        read_reference(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("column, values", [("ra", ["a", "b", "c"]), ("id", ["s1", "s2", "s3"])])
def test_reference_with_text_columns_names_the_column(tmp_path, column, values):
    import pandas as pd

    from photocalib.pipeline.catalogs import read_reference

    df = pd.DataFrame({"id": [1, 2, 3], "ra": [1.0, 1.1, 1.2], "dec": [0.0, 0.0, 0.0], "flux": [1.0, 2.0, 3.0]})
    df[column] = values
    path = tmp_path / "ref.parquet"
    df.to_parquet(path)
    with pytest.raises(InputError) as info:
        read_reference(path)
    assert str(path) in str(info.value) and repr(column) in str(info.value)


def test_reference_with_duplicate_ids_names_them(tmp_path):
    import pandas as pd

    from photocalib.pipeline.catalogs import read_reference

    path = tmp_path / "ref.parquet"
    pd.DataFrame({"id": [1, 1, 2], "ra": [1.0, 1.1, 1.2], "dec": [0.0, 0.0, 0.0],
                  "flux": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(InputError) as info:
        read_reference(path)
    assert str(path) in str(info.value) and "duplicate" in str(info.value) and "1" in str(info.value)
