"""Issue 18, file level: nothing silently wrong with exit status 0.

Foreign files without PCKIND are not guessed into a no-op, a calibrated image is not calibrated
twice, degenerate WCSs are refused naming the keyword, and afw mask planes keep their meaning
(the real HSC afw cutout in tests/data/rubin-afw is the judge: its own MP_* header defines the bits).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from photocalib import InputError
from photocalib._io import atomic_write, remove_stale_temporaries
from photocalib.astrometry import SkyWcs
from photocalib.cli import main
from photocalib.image import Exposure, ImageKind
from photocalib.image.mask import MaskPlane
from photocalib.pipeline.layout import RunBusyError, RunLock

DATA = Path(__file__).parents[1] / "data"
AFW = DATA / "rubin-afw" / "HSC-0908120-056-small.fits"


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("photocalib: error:"), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _foreign(tmp_path, sip_header, image) -> Path:
    """An image with a WCS and no PCKIND, as every survey file is."""
    path = tmp_path / "foreign.fits"
    fits.PrimaryHDU(image, header=sip_header).writeto(path)
    return path


# -- item 4: no PCKIND is never guessed into an unchanged copy ------------------------------------
@pytest.mark.parametrize("command", ["to-fluence", "to-surface-brightness"])
def test_file_without_pckind_needs_input_kind(tmp_path, sip_header, command):
    src = _foreign(tmp_path, sip_header, np.full((48, 64), 7.0, np.float32))
    result = CliRunner().invoke(main, [command, str(src)])
    _one_line_error(result, "PCKIND", "--input-kind")
    assert not list(tmp_path.glob("foreign.*.fits"))


@pytest.mark.parametrize("command,kind", [("to-fluence", "FLUENCE"),
                                          ("to-surface-brightness", "SURFACE_BRIGHTNESS")])
def test_conversion_to_its_own_kind_is_refused(tmp_path, sip_header, command, kind):
    src = _foreign(tmp_path, sip_header, np.full((48, 64), 7.0, np.float32))
    result = CliRunner().invoke(main, [command, str(src), "--input-kind", kind])
    _one_line_error(result, f"already a {kind}", "unchanged")


def test_to_surface_brightness_with_input_kind_divides_by_the_area(tmp_path, sip_header):
    image = np.full((48, 64), 7.0, np.float32)
    src = _foreign(tmp_path, sip_header, image)
    out = tmp_path / "sb.fits"
    result = CliRunner().invoke(main, ["to-surface-brightness", str(src), "--input-kind", "FLUENCE",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    area = SkyWcs.from_header(sip_header).pixel_area_field(Exposure.read(out).bbox).fill()
    got = Exposure.read(out)
    assert got.kind is ImageKind.SURFACE_BRIGHTNESS
    np.testing.assert_allclose(got.image, image / area, rtol=1e-6)
    assert not np.allclose(got.image, image, rtol=1e-3)  # not the input written back


# -- item 5: a calexp is not calibrated twice ------------------------------------------------------
def test_calibrate_refuses_a_calibrated_image(tmp_path, files):
    exp = Exposure.read(files["exposure"]).to_fluence()
    calexp = exp.replace(unit="nJy")
    path = tmp_path / "calexp.fits"
    calexp.write(path)
    result = CliRunner().invoke(main, ["calibrate", str(path), str(files["calib"])])
    _one_line_error(result, "already calibrated", "nJy")
    # The library's own calexp (written by calibrate) is refused the second time too.
    first = CliRunner().invoke(main, ["calibrate", str(files["exposure"]), str(files["calib"]),
                                      "--out", str(tmp_path / "once.fits")])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["calibrate", str(tmp_path / "once.fits"), str(files["calib"])])
    _one_line_error(again, "already calibrated")


@pytest.mark.parametrize("bunit", ["nanomaggy", "Jy/sr", "nJy/arcsec2"])
def test_calibrate_refuses_other_flux_density_units(tmp_path, sip_header, files, bunit):
    header = sip_header.copy()
    header["BUNIT"] = bunit
    header["PCKIND"] = "FLUENCE"
    path = tmp_path / "sdss.fits"
    fits.PrimaryHDU(np.ones((48, 64), np.float32), header=header).writeto(path)
    _one_line_error(CliRunner().invoke(main, ["calibrate", str(path), str(files["calib"])]),
                    "already calibrated")


# -- item 6: degenerate WCSs -----------------------------------------------------------------------
def _tan(**cd) -> fits.Header:
    h = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                     "CRPIX1": 32.0, "CRPIX2": 24.0, "NAXIS1": 64, "NAXIS2": 48})
    h.update(cd)
    return h


@pytest.mark.parametrize("cd,words", [
    ({"CD1_1": 1e-30, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1e-30}, ["CD1_1", "pixel scale"]),
    ({"CD1_1": 0.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.0}, ["CD1_1", "singular"]),
    ({"CD1_1": 1e-4, "CD1_2": 1e-4, "CD2_1": 1e-4, "CD2_2": 1e-4}, ["CD1_1", "singular"]),
    ({"CD1_1": 1e-4, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1e-12}, ["CD1_1", "nearly singular"]),
    ({"CDELT1": 20.0, "CDELT2": 20.0}, ["CDELT1", "pixel scale"]),
])
def test_degenerate_wcs_is_refused_naming_the_keyword(cd, words):
    with pytest.raises(InputError) as info:
        SkyWcs.from_header(_tan(**cd))
    for word in words:
        assert word in str(info.value)


def test_sane_scales_still_accepted():
    for scale in (0.05 / 3600, 0.2 / 3600, 1.0, 9.0):  # 50 mas HST to 9°/pixel all-sky cameras
        wcs = SkyWcs.from_header(_tan(CDELT1=-scale, CDELT2=scale))
        np.testing.assert_allclose(wcs.pixel_scale(31.0, 23.0), scale * 3600, rtol=1e-6)  # at CRPIX


@pytest.mark.parametrize("command", ["to-fluence", "to-surface-brightness", "area-map"])
def test_degenerate_wcs_through_the_cli_is_one_line(tmp_path, command):
    path = tmp_path / "tiny.fits"
    header = _tan(CD1_1=1e-30, CD1_2=0.0, CD2_1=0.0, CD2_2=1e-30)
    del header["NAXIS1"], header["NAXIS2"]
    header["PCKIND"] = "SURFACE_BRIGHTNESS" if command == "to-fluence" else "FLUENCE"
    fits.PrimaryHDU(np.ones((48, 64), np.float32), header=header).writeto(path)
    _one_line_error(CliRunner().invoke(main, [command, str(path)]), "CD1_1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fits"]


# -- item 7: afw mask planes and the unnamed-HDU afw layout ---------------------------------------
def _afw_bits() -> tuple[np.ndarray, dict[str, int]]:
    with fits.open(AFW) as hdul:
        mask = hdul[2].data.astype(np.int64)
        planes = {k[3:]: int(v) for k, v in hdul[2].header.items() if k.startswith("MP_")}
    return mask, planes


def test_afw_mask_planes_keep_their_meaning():
    raw, planes = _afw_bits()
    assert planes["DETECTED"] == 5 and planes["CR"] == 3  # the file's own definitions
    exp = Exposure.read(AFW)
    detected = (raw >> planes["DETECTED"]) & 1
    assert detected.sum() > 1000  # sources are marked in this cutout
    np.testing.assert_array_equal((exp.mask & MaskPlane.DETECTED) != 0, detected == 1)
    for name in ("CR", "SAT", "BAD", "EDGE", "INTRP", "NO_DATA"):
        np.testing.assert_array_equal((exp.mask & MaskPlane[name]) != 0,
                                      ((raw >> planes[name]) & 1) == 1, err_msg=name)
    # afw's CROSSTALK has no plane of its own here: it makes a pixel SUSPECT.
    suspect = ((raw >> planes["SUSPECT"]) | (raw >> planes["CROSSTALK"])) & 1
    np.testing.assert_array_equal((exp.mask & MaskPlane.SUSPECT) != 0, suspect == 1)
    # afw's DETECTED bit (value 32) is photocalib's CR bit: read naively, every source would
    # be a cosmic ray.
    assert int(MaskPlane.CR) == 1 << planes["DETECTED"]


def test_afw_file_variance_and_mask_survive_to_fluence(tmp_path):
    raw, planes = _afw_bits()
    with fits.open(AFW) as hdul:
        assert hdul[1].name in ("", "PRIMARY") and hdul[3].header["EXTTYPE"] == "VARIANCE"
        variance = hdul[3].data.astype(np.float64)
        image = hdul[1].data.astype(np.float64)
    out = tmp_path / "fluence.fits"
    result = CliRunner().invoke(main, ["to-fluence", str(AFW), "--input-kind", "SURFACE_BRIGHTNESS",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    got = Exposure.read(out)
    area = Exposure.read(AFW).wcs.pixel_area_field(got.bbox).fill()
    np.testing.assert_allclose(got.image, image * area, rtol=1e-6)
    assert got.variance is not None
    np.testing.assert_allclose(got.variance, variance * area**2, rtol=1e-6)
    assert got.mask.any()
    np.testing.assert_array_equal((got.mask & MaskPlane.DETECTED) != 0,
                                  ((raw >> planes["DETECTED"]) & 1) == 1)


def test_photocalib_masks_read_back_unchanged(tmp_path, exposure):
    mask = np.zeros(exposure.shape, np.uint32)
    mask[3, 4] = MaskPlane.DETECTED | MaskPlane.CR
    mask[5, 6] = MaskPlane.SUSPECT
    path = tmp_path / "e.fits"
    exposure.replace(mask=mask).write(path)
    np.testing.assert_array_equal(Exposure.read(path).mask, mask)


# -- item 1 (building block): the run-folder lock --------------------------------------------------
def test_second_lock_refuses_naming_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunBusyError) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"PID {os.getpid()}" in message and "--wait" in message
    with RunLock(tmp_path):  # released: free again
        pass
    assert not (tmp_path / RunLock.NAME).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = RunLock(tmp_path)
    holder.record["pid"] = dead.pid
    assert holder._try_create()
    with RunLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_lock_of_a_live_process_is_kept_and_waited_for(tmp_path):
    code = (f"import sys, time; sys.path[:0] = {sys.path!r}\n"
            "from photocalib.pipeline.layout import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(2.0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    t_held = time.monotonic()
    with pytest.raises(RunBusyError, match=f"PID {proc.pid}"):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path, wait=30.0, poll=0.1) as lock:
        # got it only once the holder let go, after its 2 s
        assert time.monotonic() - t_held >= 1.9
        assert lock.holder()["pid"] == os.getpid()
    proc.wait(10)


# -- item 11 (temporaries carry the writer's PID) --------------------------------------------------
def test_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "image.fits"
    with atomic_write(target) as tmp:
        assert f"-{os.getpid()}." in tmp.name
        live = tmp.name
        tmp.write_bytes(b"x")
        # While this writer lives, a cleanup keeps its temporary.
        assert remove_stale_temporaries(tmp_path) == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    debris = tmp_path / live.replace(f"-{os.getpid()}.", f"-{dead.pid}.")
    debris.write_bytes(b"partial" * 1000)
    foreign = tmp_path / ".image.fits.00000000-1.abcd.tmp"  # another host's writer
    foreign.write_bytes(b"y")
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert not debris.exists() and foreign.exists()
    assert target.read_bytes() == b"new"


# -- item 8: gzip/bzip2-compressed FITS read everywhere ---------------------------------------------
def _compress(src: Path, dest: Path) -> Path:
    import bz2
    import gzip

    opener = gzip.open if dest.suffix == ".gz" else bz2.open
    with opener(dest, "wb") as handle:
        handle.write(src.read_bytes())
    return dest


@pytest.mark.parametrize("suffix", [".fits.gz", ".fits.bz2"])
def test_compressed_fits_is_read(tmp_path, files, suffix):
    src = files["exposure"]
    packed = _compress(src, tmp_path / f"exposure{suffix}")
    want, got = Exposure.read(src), Exposure.read(packed)
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.variance, want.variance)
    out = tmp_path / "fluence.fits"
    result = CliRunner().invoke(main, ["to-fluence", str(packed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(Exposure.read(out).image, want.to_fluence().image)
    # Cut short, it is refused in one line rather than read as far as it goes.
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    _one_line_error(CliRunner().invoke(main, ["to-fluence", str(cut)]), "truncated")


def test_run_finds_bzip2_raw_files(tmp_path, sip_header):
    from photocalib.pipeline.inputs import discover_raw

    header = sip_header.copy()
    header["VISIT"] = 7
    header["DETECTOR"] = 3
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((48, 64), np.float32), header=header).writeto(plain)
    raw = tmp_path / "raw"
    raw.mkdir()
    _compress(plain, raw / "visit-7.fits.bz2")
    units = discover_raw([raw])
    assert [(u.visit, u.detector) for u in units] == [(7, 3)]
