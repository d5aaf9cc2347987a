"""SplineField against analytic truth: exact bicubics, h^4 convergence, exact integrals, fits."""

import numpy as np
import pytest

import photocalib as pc

BOX = pc.Box(-3, 5, 120, 90)


def _bicubic(a):
    def f(x, y):
        xs = (np.asarray(x) - 50.0) / 60.0
        ys = (np.asarray(y) - 50.0) / 45.0
        return sum(a[j, i] * xs**i * ys**j for j in range(4) for i in range(4))

    return f


def _bicubic_integral(a, box):
    """∫∫ over the box edges of the polynomial above, term by term."""
    xmin, xmax, ymin, ymax = box.extent

    def mono(lo, hi, c, s, p):
        u0, u1 = (lo - c) / s, (hi - c) / s
        return s * (u1 ** (p + 1) - u0 ** (p + 1)) / (p + 1)

    return sum(
        a[j, i] * mono(xmin, xmax, 50.0, 60.0, i) * mono(ymin, ymax, 50.0, 45.0, j)
        for j in range(4)
        for i in range(4)
    )


def test_top_level_name():
    assert pc.SplineField is pc.fields.SplineField


def test_reproduces_bicubic_polynomials_exactly(rng):
    a = rng.normal(size=(4, 4))
    f = _bicubic(a)
    # irregular nodes: the not-a-knot spline reproduces cubics on any grid
    gx = np.sort(np.concatenate([[-3.5, 116.5], rng.uniform(-3, 116, 5)]))
    gy = np.sort(np.concatenate([[4.5, 94.5], rng.uniform(5, 94, 4)]))
    s = pc.SplineField(BOX, gx, gy, f(gx[None, :], gy[:, None]))
    x = rng.uniform(-10, 130, 500)  # inside and beyond the nodes
    y = rng.uniform(0, 100, 500)
    scale = np.abs(a).sum()
    np.testing.assert_allclose(s.evaluate(x, y), f(x, y), rtol=0, atol=1e-12 * scale)
    xs, ys = BOX.pixel_centers()
    np.testing.assert_allclose(s.fill(), f(xs[None, :], ys[:, None]), rtol=0, atol=1e-12 * scale)
    assert s.integrate() == pytest.approx(_bicubic_integral(a, BOX), rel=1e-12, abs=1e-12 * scale * BOX.area)
    assert s.mean() == pytest.approx(s.integrate() / BOX.area, rel=1e-15)


def test_interpolation_error_falls_as_h4():
    box = pc.Box(0, 0, 400, 300)

    def truth(x, y):
        return np.sin(x / 37.0) * np.cos(y / 29.0) + 0.3 * np.sin((x + y) / 23.0)

    x = np.linspace(-0.5, 399.5, 301)
    y = np.linspace(-0.5, 299.5, 211)
    errors = []
    for n in (12, 24, 48):
        gx, gy = pc.SplineField.regular_grid(box, n)
        s = pc.SplineField(box, gx, gy, truth(gx[None, :], gy[:, None]))
        errors.append(np.abs(s.evaluate(x[None, :], y[:, None]) - truth(x[None, :], y[:, None])).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # h -> h/2 divides an O(h^4) error by ~16: the observed order is close to 4
    assert np.all(np.log2(ratios) > 3.6), (errors, ratios)


def test_fill_matches_evaluate_at_pixel_centres(rng):
    s = pc.SplineField.on_grid(rng.normal(size=(7, 9)), BOX)
    xs, ys = BOX.pixel_centers()
    np.testing.assert_allclose(s.fill(), s.evaluate(xs[None, :], ys[:, None]), rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        s.fill(np.float32), s.fill().astype(np.float32), rtol=1e-6, atol=1e-6
    )
    img = rng.normal(size=BOX.shape)
    np.testing.assert_allclose(s.multiply_image(img), img * s.fill(), rtol=1e-15)


def test_integral_exact_against_knot_aligned_quadrature(rng):
    s = pc.SplineField.on_grid(rng.normal(size=(6, 8)), BOX)
    # Independent: 2-point Gauss-Legendre is exact for cubics, applied piece by piece between
    # every pair of knots (the spline is one bicubic on each knot cell).
    nodes, weights = np.polynomial.legendre.leggauss(2)

    def points(t, lo, hi):
        edges = np.unique(np.clip(t, lo, hi))
        mid = 0.5 * (edges[1:] + edges[:-1])
        half = 0.5 * np.diff(edges)
        return (mid[:, None] + half[:, None] * nodes).ravel(), (half[:, None] * weights).ravel()

    xmin, xmax, ymin, ymax = BOX.extent
    px, wx = points(s._tx, xmin, xmax)
    py, wy = points(s._ty, ymin, ymax)
    truth = wy @ s.evaluate(px[None, :], py[:, None]) @ wx
    assert s.integrate() == pytest.approx(truth, rel=1e-13)


def test_fit_recovers_a_spline_from_noisy_scattered_points(rng):
    truth = pc.SplineField.on_grid(1.0 + 0.05 * rng.normal(size=(6, 6)), BOX)
    n = 20000
    x = rng.uniform(-3.5, 116.5, n)
    y = rng.uniform(4.5, 94.5, n)
    sigma = 1e-3
    z = truth.evaluate(x, y) + sigma * rng.normal(size=n)
    fit = pc.SplineField.fit(x, y, z, weights=np.full(n, sigma**-2), nodes=6, bbox=BOX)
    # 36 parameters from 20000 points: node errors ~ sigma * sqrt(36 / 20000) * a few
    np.testing.assert_allclose(fit.values, truth.values, atol=10 * sigma * np.sqrt(36 / n) * 5)
    exact = pc.SplineField.fit(x, y, truth.evaluate(x, y), nodes=6, bbox=BOX)
    np.testing.assert_allclose(exact.values, truth.values, atol=1e-10)


def test_approximate_a_chebyshev_field(rng):
    cheb = pc.ChebyshevField(rng.normal(size=(4, 4)), BOX)  # a bicubic in disguise
    s = pc.SplineField.approximate(cheb, nodes=(5, 4))
    x, y = rng.uniform(-3, 116, 200), rng.uniform(5, 94, 200)
    np.testing.assert_allclose(s.evaluate(x, y), cheb.evaluate(x, y), rtol=0, atol=1e-11)
    assert s.mean() == pytest.approx(cheb.mean(), rel=1e-12, abs=1e-12)


def test_fits_round_trip_is_exact(tmp_path, rng):
    s = pc.SplineField.on_grid(rng.normal(size=(5, 7)), BOX)
    path = tmp_path / "s.fits"
    s.write(path)
    back = pc.fields.read_field(path)
    assert isinstance(back, pc.SplineField) and back == s
    x, y = rng.uniform(-3, 116, 100), rng.uniform(5, 94, 100)
    np.testing.assert_array_equal(back.evaluate(x, y), s.evaluate(x, y))
    np.testing.assert_array_equal(back.fill(), s.fill())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.arange(3.0), np.arange(4.0), np.zeros((4, 3))), "at least 4 nodes"),
        ((np.array([0.0, 2.0, 1.0, 3.0]), np.arange(4.0), np.zeros((4, 4))), "strictly increasing"),
        ((np.arange(4.0), np.arange(5.0), np.zeros((4, 5))), "values must have shape"),
        ((np.arange(4.0), np.arange(4.0), np.full((4, 4), np.nan)), "finite"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(pc.InputError, match=match):
        pc.SplineField(BOX, *args)


def test_fit_needs_enough_points():
    with pytest.raises(pc.InputError, match="usable points"):
        pc.SplineField.fit([1.0, 2.0], [1.0, 2.0], [1.0, 1.0], nodes=4, bbox=BOX)


def test_fit_many_nodes_with_a_gap_in_the_data(rng):
    """Tree-ring scale: 60x45 nodes (2700 coefficients) from binned data with a hole."""
    box = pc.Box(0, 0, 600, 450)

    def rings(x, y):
        r = np.hypot(x + 900.0, y + 700.0)
        return 1.0 + 1e-3 * np.sin(r / 12.0)

    yy, xx = np.mgrid[2:450:4, 2:600:4].astype(float)
    keep = ~((np.abs(xx - 300) < 40) & (np.abs(yy - 200) < 40))  # an 80-pixel hole
    fit = pc.SplineField.fit(xx[keep], yy[keep], rings(xx[keep], yy[keep]), nodes=(60, 45), bbox=box)
    x, y = rng.uniform(0, 599, 4000), rng.uniform(0, 449, 4000)
    hole = (np.abs(x - 300) < 40) & (np.abs(y - 200) < 40)
    near = (np.abs(x - 300) < 60) & (np.abs(y - 200) < 60)  # within 2 nodes of the hole
    err = np.abs(fit.evaluate(x, y) - rings(x, y))
    # away from the hole the least-squares spline is as good as interpolating the truth at
    # the nodes (an independent estimate of what this grid can represent)
    gx, gy = pc.SplineField.regular_grid(box, (60, 45))
    interp = pc.SplineField(box, gx, gy, rings(gx[None, :], gy[:, None]))
    assert err[~near].max() <= 1.5 * np.abs(interp.evaluate(x, y) - rings(x, y)).max()
    # across the hole the curvature penalty bridges smoothly: no excursion beyond the pattern
    assert np.all(np.abs(fit.evaluate(x[hole], y[hole]) - 1.0) < 1.5e-3)
    assert np.all(np.isfinite(fit.values))


def test_agrees_with_fitpack_interpolating_spline(rng):
    """Independent implementation: FITPACK's s=0 bicubic puts interior knots at the data points
    but the second and second-last, which is the not-a-knot spline."""
    from scipy.interpolate import RectBivariateSpline

    gx = np.sort(rng.uniform(-3.5, 116.5, 9))
    gy = np.sort(rng.uniform(4.5, 94.5, 7))
    values = rng.normal(size=(7, 9))
    s = pc.SplineField(BOX, gx, gy, values)
    ref = RectBivariateSpline(gy, gx, values, kx=3, ky=3, s=0)
    x = rng.uniform(gx[0], gx[-1], 300)
    y = rng.uniform(gy[0], gy[-1], 300)
    np.testing.assert_allclose(s.evaluate(x, y), ref.ev(y, x), rtol=0, atol=1e-11)
