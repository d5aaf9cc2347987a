"""Shared fixtures of the reliability suite: small valid files of every kind photocalib reads,
to be damaged by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from photocalib.astrometry import SkyWcs
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.calib import PhotoCalib
from photocalib.fields import ChebyshevField
from photocalib.geom import Box
from photocalib.image import Exposure, ImageKind

NX, NY = 64, 48


@pytest.fixture(scope="session")
def sip_header() -> fits.Header:
    """A TAN-SIP header of order 5 for a 64×48 detector (large distortion, off-axis)."""
    return hsc_like_sip_header(nx=NX, ny=NY, axis_pixel=(-3000.0, -2000.0))


@pytest.fixture(scope="session")
def sip_wcs(sip_header) -> SkyWcs:
    return SkyWcs.from_header(sip_header)


@pytest.fixture()
def exposure(sip_wcs) -> Exposure:
    rng = np.random.default_rng(5)
    image = rng.normal(100.0, 3.0, (NY, NX)).astype(np.float32)
    return Exposure(image, variance=np.full((NY, NX), 9.0, np.float32), wcs=sip_wcs,
                    kind=ImageKind.SURFACE_BRIGHTNESS, unit="count/arcsec2")


@pytest.fixture(scope="session")
def files(tmp_path_factory, sip_header) -> dict[str, Path]:
    """One valid file of every format photocalib reads (written by photocalib itself)."""
    root = tmp_path_factory.mktemp("valid")
    wcs = SkyWcs.from_header(sip_header)
    rng = np.random.default_rng(3)
    exp = Exposure(rng.normal(100.0, 3.0, (NY, NX)).astype(np.float32),
                   variance=np.full((NY, NX), 9.0, np.float32), wcs=wcs,
                   kind=ImageKind.SURFACE_BRIGHTNESS, unit="count/arcsec2")
    out = {"exposure": root / "exposure.fits", "field": root / "field.fits",
           "calib": root / "calib.fits", "refcat": root / "refcat.parquet",
           "catalog": root / "catalog.parquet", "config": root / "config.toml",
           "header": root / "wcs.fits"}
    exp.write(out["exposure"])
    box = Box(0, 0, NX, NY)
    field = ChebyshevField(np.array([[1.0, 0.01], [0.02, 0.0]]), box)
    field.write(out["field"])
    PhotoCalib(field, kind=ImageKind.FLUENCE, error=0.01).write(out["calib"])
    pd.DataFrame({"id": np.arange(20), "ra": np.linspace(150, 150.01, 20),
                  "dec": np.linspace(2, 2.01, 20), "flux": np.linspace(1e4, 2e4, 20),
                  "flux_err": np.full(20, 10.0)}).to_parquet(out["refcat"], index=False)
    from astropy.table import Table

    from photocalib.fit import write_catalog
    write_catalog(Table({"x": rng.uniform(0, NX, 20), "y": rng.uniform(0, NY, 20),
                         "instflux": rng.uniform(1e3, 1e4, 20)}), out["catalog"])
    out["config"].write_text("[measure]\naperture_arcsec = 3.0\n\n[dask]\nprogress = false\n")
    fits.PrimaryHDU(header=sip_header).writeto(out["header"])
    return out
