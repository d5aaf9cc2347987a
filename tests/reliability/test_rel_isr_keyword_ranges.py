"""Reliability: run_isr's range checks of GAIN/RDNOISE name the HDU, visit and detector, so an
unphysical keyword in a many-detector raw file can be found."""

from __future__ import annotations

import pytest

from photocalib.errors import InputError


@pytest.mark.parametrize("key, value", [("GAIN", -1.0), ("GAIN", 0.0), ("RDNOISE", -3.0)])
def test_unphysical_raw_keyword_names_visit_and_detector(sip_header, key, value):
    # isr_from_hdu names the HDU for unreadable keywords but run_isr's range check does not.
    import numpy as np
    from astropy.io import fits

    from photocalib.isr import DomeFlat, isr_from_hdu

    h = sip_header.copy()
    h.update({"GAIN": 1.5, "RDNOISE": 4.0, "BIAS": 1000.0, "VISIT": 12, "DETECTOR": 3, "EXTNAME": "D3"})
    h[key] = value
    flat = DomeFlat.from_array(np.full((48, 64), 1e4), level=1e4)
    with pytest.raises(InputError) as info:
        isr_from_hdu(fits.ImageHDU(np.full((48, 64), 1200.0, np.float32), h), flat)
    assert key in str(info.value) and "VISIT=12" in str(info.value) and "DETECTOR=3" in str(info.value)
