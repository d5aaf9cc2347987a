"""GalSim-rendered Gaussian stars on a strongly distorted TAN-SIP detector, measured in 2" apertures.

GalSim draws each star through the local WCS, so its pixel sum is its flux whatever the pixel
size; the image is made a surface-brightness image (as flat-fielding does), converted back to
fluence by photocalib, and each star's 2" angular-aperture flux must equal its flux times the
Gaussian's analytic enclosed energy to 0.1 %.
"""

from __future__ import annotations

import galsim
import numpy as np

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.measure import aperture_photometry

N = 512


def test_gaussian_stars_on_distorted_detector_keep_their_flux(rng):
    # Axis 6000 pixels away and a strong k1: the area changes by ~10 % across 512 pixels, and the
    # non-radial SIP terms make pixels anisotropic.
    header = hsc_like_sip_header(nx=N, ny=N, axis_pixel=(-6000.0, -3000.0), k1=2.5e-9, k2=1e-17)
    wcs = pc.SkyWcs.from_header(header)
    gs_wcs = galsim.GSFitsWCS(header=header)
    area_img = wcs.pixel_area_field(pc.Box(0, 0, N, N)).fill()
    assert area_img.max() / area_img.min() > 1.08
    n = 36
    g = np.linspace(40, N - 40, 6)
    x, y = (v.ravel() + rng.uniform(-0.5, 0.5, n) for v in np.meshgrid(g, g))
    flux = rng.uniform(2e4, 2e5, n)
    fwhm = 1.2  # arcsec
    image = galsim.ImageD(N, N, wcs=gs_wcs)
    for xi, yi, fi in zip(x, y, flux, strict=True):  # GalSim draws one profile per call
        centre = galsim.PositionD(xi + 1.0, yi + 1.0)  # GalSim pixels are 1-based
        ix, iy = int(round(xi)) + 1, int(round(yi)) + 1
        bounds = galsim.BoundsI(ix - 35, ix + 35, iy - 35, iy + 35) & image.bounds
        galsim.Gaussian(fwhm=fwhm, flux=fi).drawImage(image=image[bounds], center=centre, add_to_image=True)
    fluence = image.array.copy()
    # What flat-fielding produces: a surface-brightness image (count / arcsec²).
    sb = pc.Exposure(fluence / area_img, wcs=wcs, kind="SURFACE_BRIGHTNESS")
    measured = aperture_photometry(sb.to_fluence(), x, y, radius_arcsec=2.0)
    assert np.all(measured["flags"] == 0)
    sigma2 = (fwhm / 2.3548200450309493) ** 2
    # Pixel integration (GalSim) and the overlap weights each convolve with the pixel: the
    # enclosed energy of the Gaussian in r is that of variance sigma² + 2·A/12.
    s2 = sigma2 + 2.0 * wcs.pixel_area(x, y) / 12.0
    ee = 1.0 - np.exp(-(2.0**2) / (2.0 * s2))
    ratio = np.asarray(measured["instflux"]) / (flux * ee)
    print(f"\n2\" angular apertures: max |flux ratio - 1| = {np.abs(ratio - 1).max():.2e}")
    assert np.abs(ratio - 1).max() <= 1e-3
    # A fixed pixel aperture of the same mean size does not: its flux follows the pixel area.
    scale = np.sqrt(area_img.mean())
    pix = aperture_photometry(sb.to_fluence(), x, y, radius=1.2 / scale)
    pix_ratio = np.asarray(pix["instflux"]) / flux
    assert np.ptp(pix_ratio) > 5e-3
