"""ChebyshevField against analytic truth."""

import numpy as np
import pytest

import photocalib as pc


def test_fill_matches_evaluate_and_mean_is_exact(rng):
    box = pc.Box(3, -2, 37, 23)
    c = rng.normal(size=(5, 6))
    f = pc.ChebyshevField(c, box)
    img = f.fill()
    xs, ys = box.pixel_centers()
    np.testing.assert_allclose(img, f.evaluate(xs[None, :], ys[:, None]), rtol=1e-13, atol=1e-13)
    # mean over the box edges against dense Gauss-Legendre quadrature of the polynomial
    assert f.mean() == pytest.approx(pc.BoundedField.integrate(f) / box.area, rel=1e-12)


def test_linear_field_integral_analytic():
    box = pc.Box(0, 0, 10, 20)  # extent x in [-0.5, 9.5], y in [-0.5, 19.5]
    x = np.array([-0.5, 9.5, -0.5, 9.5, 4.5])
    y = np.array([-0.5, -0.5, 19.5, 19.5, 9.5])
    z = 1.0 + 0.1 * x + 0.02 * y  # exact plane; mean = value at the centre (4.5, 9.5)
    f = pc.ChebyshevField.fit(x, y, z, order=1, bbox=box)
    assert f.mean() == pytest.approx(1.0 + 0.45 + 0.19, rel=1e-12)
    assert f.integrate() == pytest.approx(200 * (1.0 + 0.45 + 0.19), rel=1e-12)


def test_approximate_recovers_polynomial_exactly(rng):
    box = pc.Box(0, 0, 300, 200)
    truth = pc.ChebyshevField(rng.normal(size=(4, 4)), box)
    approx = pc.ChebyshevField.approximate(truth * 2.0, order=6)
    x = rng.uniform(-0.5, 299.5, 100)
    y = rng.uniform(-0.5, 199.5, 100)
    np.testing.assert_allclose(approx.evaluate(x, y), 2 * truth.evaluate(x, y), rtol=1e-12, atol=1e-12)


def test_product_and_quotient_algebra(rng):
    box = pc.Box(0, 0, 50, 40)
    a = pc.ChebyshevField(np.abs(rng.normal(size=(3, 3))) + [[5, 0, 0], [0, 0, 0], [0, 0, 0]], box)
    b = pc.ConstantField(2.5)
    p = 2.0 * a * b
    q = p / a
    x, y = rng.uniform(0, 49, 20), rng.uniform(0, 39, 20)
    np.testing.assert_allclose(p.evaluate(x, y), 5.0 * a.evaluate(x, y), rtol=1e-14)
    np.testing.assert_allclose(q.evaluate(x, y), 5.0, rtol=1e-14)
    assert p.bbox == box
    assert p.mean() == pytest.approx(5.0 * a.mean(), rel=1e-13)


def test_fits_roundtrip(tmp_path, rng):
    box = pc.Box(0, 0, 64, 32)
    f = pc.ChebyshevField(rng.normal(size=(3, 4)), box) * pc.ConstantField(3.0) / pc.ChebyshevField([[2.0]], box)
    path = tmp_path / "f.fits"
    f.write(path)
    g = pc.fields.read_field(path)
    assert g == f
    np.testing.assert_array_equal(g.fill(), f.fill())


def test_mismatched_boxes_raise():
    with pytest.raises(pc.InputError, match="different boxes"):
        pc.ConstantField(1.0, pc.Box(0, 0, 2, 2)) * pc.ConstantField(1.0, pc.Box(0, 0, 3, 3))
