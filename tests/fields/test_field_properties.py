"""Hypothesis properties of the field algebra over Constant, Chebyshev and Spline fields."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import photocalib as pc

EPS = np.finfo(np.float64).eps


@st.composite
def boxes(draw):
    return pc.Box(
        draw(st.integers(-50, 50)), draw(st.integers(-50, 50)),
        draw(st.integers(4, 60)), draw(st.integers(4, 60)),
    )


def make_field(kind: str, seed: int, box: pc.Box) -> pc.BoundedField:
    """A positive field: the constant term dominates the sum of the others (|T_k| <= 1)."""
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return pc.ConstantField(rng.uniform(0.5, 3.0), box if rng.integers(2) else None)
    if kind == "chebyshev":
        c = rng.uniform(-1, 1, size=(rng.integers(1, 5), rng.integers(1, 5)))
        c[0, 0] = 1.5 * np.abs(c).sum() + 0.1
        return pc.ChebyshevField(c, box)
    ny, nx = rng.integers(4, 8, size=2)
    return pc.SplineField.on_grid(2.0 + 0.2 * rng.uniform(-1, 1, size=(ny, nx)), box)


kinds = st.sampled_from(["constant", "chebyshev", "spline"])
seeds = st.integers(0, 2**32 - 1)
scalars = st.floats(0.01, 100.0)


def _points(box, seed, n=64):
    rng = np.random.default_rng(seed)
    xmin, xmax, ymin, ymax = box.extent
    return rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)


@given(boxes(), kinds, kinds, seeds, seeds, scalars)
def test_products_and_quotients_evaluate_to_products_and_quotients(box, ka, kb, sa, sb, a):
    f = make_field(ka, sa, box)
    g = make_field(kb, sb, box)
    x, y = _points(box, sa ^ sb)
    fv, gv = f.evaluate(x, y), g.evaluate(x, y)
    np.testing.assert_allclose((f * g).evaluate(x, y), fv * gv, rtol=4 * EPS)
    np.testing.assert_allclose((f / g).evaluate(x, y), fv / gv, rtol=4 * EPS)
    np.testing.assert_allclose((a * f).evaluate(x, y), a * fv, rtol=4 * EPS)
    np.testing.assert_allclose((f * a).evaluate(x, y), a * fv, rtol=4 * EPS)
    np.testing.assert_allclose((f / a).evaluate(x, y), fv / a, rtol=4 * EPS)
    np.testing.assert_allclose((a / f).evaluate(x, y), a / fv, rtol=4 * EPS)
    np.testing.assert_allclose((a * f * g / f).evaluate(x, y), a * gv, rtol=8 * EPS)


@given(boxes(), kinds, kinds, seeds, seeds)
def test_fill_equals_evaluate_at_pixel_centres(box, ka, kb, sa, sb):
    xs, ys = box.pixel_centers()
    for field in (make_field(ka, sa, box), make_field(ka, sa, box) * make_field(kb, sb, box),
                  make_field(ka, sa, box) / make_field(kb, sb, box)):
        if field.bbox is None:
            continue
        filled = field.fill()
        assert filled.shape == box.shape
        # different summation orders (matrix products vs point evaluation): a few ulp
        np.testing.assert_allclose(filled, field.evaluate(xs[None, :], ys[:, None]), rtol=1e-13)
        np.testing.assert_allclose(field.fill(np.float32), filled, rtol=2e-7)


@given(boxes(), kinds, seeds, scalars)
def test_mean_and_integrate_are_consistent(box, kind, seed, a):
    f = make_field(kind, seed, box)
    if f.bbox is None:
        f = f.with_bbox(box)
    assert f.mean() == pytest.approx(f.integrate() / box.area, rel=1e-14)
    assert (a * f).integrate() == pytest.approx(a * f.integrate(), rel=1e-14)
    assert (f / a).mean() == pytest.approx(f.mean() / a, rel=1e-14)
    # the mean lies between the extremes of the field
    xs, ys = box.pixel_centers()
    xmin, xmax, ymin, ymax = box.extent
    dense = f.evaluate(np.linspace(xmin, xmax, 97)[None, :], np.linspace(ymin, ymax, 89)[:, None])
    assert dense.min() - 1e-12 <= f.mean() <= dense.max() + 1e-12
    if kind == "chebyshev":
        # analytic integral against the generic Gauss-Legendre quadrature (exact for polynomials)
        assert f.integrate() == pytest.approx(pc.BoundedField.integrate(f), rel=1e-12)


@settings(max_examples=12)  # each example writes and reads three files
@given(boxes(), kinds, kinds, seeds, seeds)
def test_fits_round_trip_preserves_values_exactly(tmp_path_factory, box, ka, kb, sa, sb):
    f = make_field(ka, sa, box)
    g = make_field(kb, sb, box)
    x, y = _points(box, sa + 1)
    path = tmp_path_factory.mktemp("fields") / "f.fits"
    for field in (f, 2.5 * f * g, f / g):
        field.write(path, overwrite=True)
        back = pc.fields.read_field(path)
        assert type(back) is type(field)
        assert back == field
        assert back.bbox == field.bbox
        np.testing.assert_array_equal(back.evaluate(x, y), field.evaluate(x, y))
