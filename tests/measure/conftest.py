"""Fixtures for the measure tests: distorted WCSs and analytically rendered Gaussian stars."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import ndtr

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header


def render_gaussians(shape, x, y, flux, sigma, stamp=None):
    """Pixel-integrated circular Gaussians (exact, via the normal CDF), summed into an image."""
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    flux = np.broadcast_to(np.asarray(flux, float), x.shape)
    sigma = np.broadcast_to(np.asarray(sigma, float), x.shape)
    half = int(np.ceil(8 * sigma.max())) if stamp is None else stamp
    off = np.arange(-half, half + 1)
    ix = np.round(x).astype(int)[:, None] + off[None, :]
    iy = np.round(y).astype(int)[:, None] + off[None, :]
    gx = ndtr((ix + 0.5 - x[:, None]) / sigma[:, None]) - ndtr((ix - 0.5 - x[:, None]) / sigma[:, None])
    gy = ndtr((iy + 0.5 - y[:, None]) / sigma[:, None]) - ndtr((iy - 0.5 - y[:, None]) / sigma[:, None])
    vals = flux[:, None, None] * gy[:, :, None] * gx[:, None, :]
    yy = np.broadcast_to(iy[:, :, None], vals.shape)
    xx = np.broadcast_to(ix[:, None, :], vals.shape)
    ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
    img = np.zeros(shape)
    np.add.at(img, (yy[ok], xx[ok]), vals[ok])
    return img


def tan_header(nx=512, ny=512, scale=0.2):
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"], h["NAXIS2"] = nx, ny
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 30.0, -10.0
    h["CRPIX1"], h["CRPIX2"] = nx / 2 + 0.5, ny / 2 + 0.5
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale / 3600, 0.0, 0.0, scale / 3600
    return h


@pytest.fixture(scope="session")
def render():
    """The analytic renderer :func:`render_gaussians`."""
    return render_gaussians


@pytest.fixture(scope="session")
def distorted_wcs():
    """A 1024² detector cut from the HSC-like field: pixel area varies by a few per cent."""
    return pc.SkyWcs.from_header(hsc_like_sip_header(nx=1024, ny=1024, axis_pixel=(-9000.0, -5000.0), k1=4e-10))


@pytest.fixture(scope="session")
def tan_wcs():
    return pc.SkyWcs.from_header(tan_header())
