"""A real crash: the `photocalib to-fluence` process killed with SIGKILL at several moments while
it converts a large image over an existing output. Whatever the moment, the target is either the
old file, byte for byte, or the complete new one; never a partial file. (Slow: real processes.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from photocalib.image import Exposure, ImageKind

SCRIPT = Path(sys.executable).with_name("photocalib")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5, 3.5, 5.0])
def test_killed_conversion_never_leaves_a_partial_file(tmp_path, sip_header, delay):
    from photocalib.astrometry import SkyWcs
    from photocalib.astrometry.synthetic import hsc_like_sip_header

    n = 2048
    wcs = SkyWcs.from_header(hsc_like_sip_header(nx=n, ny=n))
    rng = np.random.default_rng(1)
    src = tmp_path / "sb.fits"
    Exposure(rng.normal(100, 5, (n, n)).astype(np.float32), variance=np.full((n, n), 25, np.float32),
             wcs=wcs, kind=ImageKind.SURFACE_BRIGHTNESS, unit="count/arcsec2").write(src)
    out = tmp_path / "fluence.fits"
    out.write_bytes(b"old content that must survive" * 100)
    old = out.read_bytes()
    proc = subprocess.Popen([str(SCRIPT), "to-fluence", str(src), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    data = out.read_bytes()
    if data != old:
        # the complete new file: it reads, and it is the exact conversion
        got = Exposure.read(out)
        expected = Exposure.read(src).to_fluence()
        np.testing.assert_array_equal(got.image, expected.image)
        assert got.kind is ImageKind.FLUENCE
        with fits.open(out) as hdul:
            assert hdul[0].header["PCKIND"] == "FLUENCE"
    # the target never names a temporary; stale hidden temporaries are the only possible debris
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["fluence.fits", "sb.fits"]
