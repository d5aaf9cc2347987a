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
    # No --input-kind: the afw reader knows a calexp is flat-fielded (surface brightness).
    result = CliRunner().invoke(main, ["to-fluence", str(AFW), "--out", str(out)])
    assert result.exit_code == 0, result.output
    got = Exposure.read(out)
    assert got.kind is ImageKind.FLUENCE
    area = got.wcs.pixel_area_field(got.bbox).fill()
    # Whatever constant the reader scales by, fluence is the file's pixels times the area up to
    # that constant, and the variance keeps its relation to the image (var / image² unchanged).
    scale = np.median(got.image / (image * area))
    np.testing.assert_allclose(got.image, scale * image * area, rtol=1e-5, atol=1e-6 * np.abs(got.image).max())
    assert got.variance is not None
    np.testing.assert_allclose(got.variance, scale**2 * variance * area**2, rtol=1e-5)
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


# -- item 9: a large image is converted block by block -------------------------------------------
@pytest.mark.parametrize("target", [ImageKind.FLUENCE, ImageKind.SURFACE_BRIGHTNESS])
@pytest.mark.parametrize("planes", [False, True])
def test_blockwise_conversion_writes_what_the_in_memory_one_writes(tmp_path, sip_header, target, planes):
    from photocalib.image.stream import convert_file

    rng = np.random.default_rng(4)
    ny, nx = 48, 64
    source = ImageKind.SURFACE_BRIGHTNESS if target is ImageKind.FLUENCE else ImageKind.FLUENCE
    mask = np.zeros((ny, nx), np.uint32)
    mask[5, 7] = MaskPlane.SAT | MaskPlane.DETECTED
    exp = Exposure(rng.normal(100, 3, (ny, nx)).astype(np.float32),
                   variance=np.full((ny, nx), 9.0, np.float32) if planes else None,
                   mask=mask if planes else None, wcs=SkyWcs.from_header(sip_header), kind=source,
                   metadata={"VISIT": 12, "FILTER": "r"})
    src = tmp_path / "in.fits"
    exp.write(src)
    want = exp.to_kind(target)
    out = tmp_path / "out.fits"
    # Blocks of 5 rows: the rows of one block meet those of the next inside the image.
    assert convert_file(src, out, target, block_bytes=5 * nx * 4, min_bytes=0)
    got = Exposure.read(out)
    assert got.kind is target and got.unit == want.unit
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.mask, want.mask)
    if planes:
        np.testing.assert_array_equal(got.variance, want.variance)
    else:
        assert got.variance is None
    assert got.metadata["VISIT"] == 12 and got.metadata["FILTER"] == "r"
    with fits.open(out) as hdul:
        assert hdul[0].header["PCKIND"] == target.value
        np.testing.assert_allclose(hdul[0].header["PIXAR_A2"],
                                   float(exp.wcs.pixel_area(*exp.bbox.center)), rtol=1e-12)
    # Converting it again to the same kind is refused rather than copied.
    with pytest.raises(InputError, match="unchanged"):
        convert_file(out, tmp_path / "again.fits", target, min_bytes=0)


@pytest.mark.slow
def test_to_fluence_of_a_20000_square_image_stays_under_3x_its_size(tmp_path):
    """The issue's case: 20000² float32 (1.6 GB). Peak RSS measured by /usr/bin/time -v."""
    import shutil

    if shutil.which("/usr/bin/time") is None:
        pytest.skip("needs /usr/bin/time")
    from photocalib.astrometry.synthetic import hsc_like_sip_header

    n = 20000
    src = tmp_path / "big.fits"
    header = hsc_like_sip_header(nx=n, ny=n)
    header["PCKIND"] = "SURFACE_BRIGHTNESS"
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = n
    header["NAXIS2"] = n
    hdu = fits.StreamingHDU(src, _only_wcs(header, n))
    row = np.full((1000, n), 100.0, np.float32)
    for _ in range(n // 1000):
        hdu.write(row)
    hdu.close()
    image_bytes = n * n * 4
    script = Path(sys.executable).with_name("photocalib")
    out = tmp_path / "fluence.fits"
    proc = subprocess.run(["/usr/bin/time", "-v", str(script), "to-fluence", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_kb = int(next(line for line in proc.stderr.splitlines()
                       if "Maximum resident set size" in line).split()[-1])
    print(f"peak RSS {peak_kb / 1024**2:.2f} GiB for a {image_bytes / 1024**3:.2f} GiB image "
          f"({peak_kb * 1024 / image_bytes:.2f}x)")
    assert peak_kb * 1024 < 3 * image_bytes
    with fits.open(out, memmap=True) as hdul:
        assert hdul[0].header["PCKIND"] == "FLUENCE"
        corner = np.asarray(hdul[0].section[:2, :2], np.float64)
    wcs = SkyWcs.from_header(header)
    expected = 100.0 * wcs.pixel_area(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(corner[0], expected, rtol=1e-6)


def _only_wcs(header: fits.Header, n: int) -> fits.Header:
    out = fits.Header()
    out["SIMPLE"] = True
    out["BITPIX"] = -32
    out["NAXIS"] = 2
    out["NAXIS1"] = n
    out["NAXIS2"] = n
    for card in header.cards:
        if card.keyword not in out:
            out.append(card)
    return out


# -- item 9: one line, exit 2, where there were tracebacks ----------------------------------------
def test_non_ascii_file_name(tmp_path, files):
    src = tmp_path / "M31_été.fits"
    src.write_bytes(files["exposure"].read_bytes())
    result = CliRunner().invoke(main, ["area-map", str(src)])
    assert result.exit_code == 0, result.output
    with fits.open(tmp_path / "M31_été.area.fits") as hdul:
        assert hdul[0].header["SRCFILE"] == "M31_\\xe9t\\xe9.fits"


def test_run_errors_are_one_line(tmp_path, files):
    survey = tmp_path / "survey"
    (survey / "raw").mkdir(parents=True)
    header = fits.getheader(files["exposure"])
    header["VISIT"] = 1
    fits.PrimaryHDU(np.zeros((48, 64), np.float32), header=header).writeto(survey / "raw" / "v1.fits")
    nested = tmp_path / "nested.toml"
    nested.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    _one_line_error(CliRunner().invoke(main, ["run", str(survey), "--out", str(tmp_path / "o"),
                                              "--config", str(nested)]), "nested")
    _one_line_error(CliRunner().invoke(main, ["run", str(survey), "--out", str(tmp_path / "o"),
                                              "--scheduler", "tcp://localhost", "--no-progress"]),
                    "tcp://HOST:PORT")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_into_a_read_only_folder_is_one_line(tmp_path, files):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = CliRunner().invoke(main, ["run", "--raw", str(files["exposure"]), "--out", str(out)])
        _one_line_error(result, str(out))
    finally:
        out.chmod(0o755)


def test_run_folder_that_cannot_be_made_is_one_line(tmp_path, files):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    header = fits.getheader(files["exposure"])
    header["VISIT"] = 1
    raw = tmp_path / "v1.fits"
    fits.PrimaryHDU(np.zeros((48, 64), np.float32), header=header).writeto(raw)
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--out", str(blocker / "run")])
    _one_line_error(result, "run folder")


def test_ctrl_c_is_one_line_exit_130(tmp_path, files, monkeypatch):
    import photocalib.pipeline.tools as tools

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tools, "area_map", interrupted)
    result = CliRunner().invoke(main, ["area-map", str(files["exposure"])])
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == [
        "photocalib: interrupted; finished work is kept (rerun the same command to resume)"]


# -- item 11: header handling is linear in the number of cards --------------------------------------
def test_header_with_many_cards_reads_and_writes_in_linear_time(tmp_path, sip_header):
    def seconds(n: int) -> float:
        header = sip_header.copy()
        header["PCKIND"] = "SURFACE_BRIGHTNESS"
        header.extend([(f"HIERARCH K{i}", i) for i in range(n)])
        path = tmp_path / f"h{n}.fits"
        fits.PrimaryHDU(np.zeros((48, 64), np.float32), header=header).writeto(path)
        t0 = time.perf_counter()
        exp = Exposure.read(path)
        exp.write(tmp_path / f"out{n}.fits")
        assert exp.metadata[f"K{n - 1}"] == n - 1
        return time.perf_counter() - t0

    seconds(500)  # warm-up
    small, large = seconds(2000), seconds(16000)
    # 8x the cards: linear gives ~8x; the quadratic behaviour gave ~64x. A wide margin for a
    # busy machine.
    assert large < 25 * small + 0.5, (small, large)


# -- item 12: a reference catalog with no usable flux -------------------------------------------
def test_reference_catalog_with_all_nan_fluxes(tmp_path):
    import pandas as pd

    from photocalib.pipeline.catalogs import read_reference

    path = tmp_path / "ref.parquet"
    pd.DataFrame({"ra": [1.0, 2.0], "dec": [3.0, 4.0], "flux": [np.nan, np.nan]}).to_parquet(path)
    with pytest.raises(InputError, match="'flux' has no finite positive flux"):
        read_reference(path)


def test_an_image_larger_than_memory_is_refused_up_front(tmp_path, sip_header, monkeypatch):
    """200000² float32 (160 GB) as a sparse file: refused naming the memory it needs."""
    n = 200_000
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = n
    header["NAXIS2"] = n
    for card in sip_header.cards:
        if card.keyword not in header and not card.keyword.startswith("NAXIS"):
            header.append(card)
    header["PCKIND"] = "FLUENCE"
    path = tmp_path / "huge.fits"
    data = header.tostring().encode("ascii")
    with open(path, "wb") as handle:
        handle.write(data)
        size = len(data) + -(-n * n * 4 // 2880) * 2880
        handle.truncate(size)  # sparse: no disk used
    with pytest.raises(InputError, match="GB of memory"):
        Exposure.read(path)
    # Converted block by block it needs no memory, but its output needs disk: with 100 GB free
    # (whatever this machine has) it is refused before anything is written.
    import collections

    import photocalib.image.stream as stream

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda _: usage(10**12, 9 * 10**11, 10**11))
    result = CliRunner().invoke(main, ["to-surface-brightness", str(path), "--out",
                                       str(tmp_path / "sb.fits")])
    _one_line_error(result, "GB on disk")
    assert not (tmp_path / "sb.fits").exists()


def test_run_folder_on_a_read_only_mount_is_one_line(tmp_path, files, monkeypatch):
    """What a read-only mount does to the first file a run writes (root ignores chmod, so the
    refusal is injected where the run writes first: its lock)."""
    import errno

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path))

    monkeypatch.setattr(RunLock, "_try_create", read_only)
    header = fits.getheader(files["exposure"])
    header["VISIT"] = 1
    raw = tmp_path / "v1.fits"
    fits.PrimaryHDU(np.zeros((48, 64), np.float32), header=header).writeto(raw)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--out", str(out)])
    _one_line_error(result, "Read-only file system", str(out))


def test_lock_whose_pid_was_reused_is_taken_over(tmp_path):
    """A holder's PID now running another process (a reused number) is no holder."""
    from photocalib.pipeline.layout import _process_start

    if _process_start(os.getpid()) is None:
        pytest.skip("needs /proc")
    holder = RunLock(tmp_path)
    holder.record["pid_start"] = _process_start(os.getpid()) - 1  # this PID, another start
    assert holder._try_create()
    with RunLock(tmp_path) as lock:
        assert lock.holder()["token"] == lock.record["token"]
    # The same PID with its own start time is a live holder.
    assert RunLock(tmp_path)._try_create()
    with pytest.raises(RunBusyError):
        RunLock(tmp_path).acquire()
