"""
A real survey image, from file to calibrated magnitudes
=======================================================

A 400 × 400 crop of a ZTF science image (``sciimg``, r band, with its ``mskimg`` bit mask),
shipped in ``tests/data/ztf``. :func:`photocalib.read_exposures` recognises the instrument
from the header and returns a flat-fielded image as what it is, a ``SURFACE_BRIGHTNESS``
exposure, with ZTF's own zero point (``MAGZP``) as its calibration. The three rules then
decide the rest: the background on surface brightness, detection and photometry on fluence.
From the command line::

    python examples/real_survey_file.py --out DIR [--image other_sciimg.fits]
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import photocalib as pc

try:
    ROOT = Path(__file__).resolve().parents[1]
except NameError:  # sphinx-gallery runs the examples from examples/ without __file__
    ROOT = Path.cwd().parent
ZTF = ROOT / "tests" / "data" / "ztf" / "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"

parser = argparse.ArgumentParser(description="Calibrated photometry of a real ZTF image.")
parser.add_argument("--out", default="real-survey-file", help="output folder for the PNG file")
parser.add_argument("--image", default=str(ZTF), help="a survey image read_exposures knows")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# Read the file
# -------------
# One :class:`~photocalib.Exposure` per detector (a ZTF quadrant file holds one). The values
# are divided by the pixel area at the image centre (``PCAREF``), so the image is in
# count/arcsec², and the calibration takes surface-brightness fluxes.
(exp,) = pc.read_exposures(args.image)
meta = exp.metadata
print(f"{meta['INSTRUMENT']} band {meta['BAND']}, visit {meta['VISIT']}, detector "
      f"{meta['DETECTOR']}, {meta['EXPTIME']} s")
print("kind:", exp.kind.value, " unit:", exp.unit)
print("calibration:", exp.photo_calib)

# %%
# The pixel area of this crop
# ---------------------------
# From the TPV WCS in the header; over a 400-pixel crop it barely changes.
area = exp.pixel_area_image()
print(f"pixel area {area.min():.6f} to {area.max():.6f} arcsec² "
      f"({100 * (area.max() / area.min() - 1):.3f} % across the crop)")

# %%
# Background on surface brightness, sources on fluence
# ----------------------------------------------------
# ``estimate`` models the sky where it is flat (rule 3); ``to_fluence`` multiplies image and
# variance by the area and converts the attached calibration with ``to_kind``, so the
# calibration keeps agreeing with the image; ``detect`` and ``aperture_photometry`` refuse
# anything but fluence (rule 1). Apertures are 4 arcsec in radius: on every source the exact
# ellipse the local Jacobian maps onto that circle.
sky = pc.background.estimate(exp)
exp = pc.background.subtract(exp, sky)
fluence = exp.to_fluence()
sources = pc.measure.detect(fluence, threshold=10.0)
phot = pc.measure.aperture_photometry(fluence, sources["x"], sources["y"], radius_arcsec=4.0)
good = (phot["flags"] == 0) & (phot["instflux"] > 0)
print(f"{len(sources)} sources above 10σ, {int(good.sum())} with clean apertures")

# %%
# Calibrated magnitudes, two ways
# -------------------------------
# The fluence calibration on the fluence photometry, and the file's own surface-brightness
# calibration on the same sums divided by the pixel area at each source (what a sum on the
# surface-brightness image is, while the area is constant across the aperture): the area
# cancels exactly, because ``to_fluence`` converted the calibration with the same WCS.
x, y = np.asarray(sources["x"])[good], np.asarray(sources["y"])[good]
mag = fluence.photo_calib.instflux_to_magnitude(np.asarray(phot["instflux"])[good], x, y)
sb_sums = np.asarray(phot["instflux"])[good] / exp.wcs.pixel_area(x, y)
mag_sb = exp.photo_calib.instflux_to_magnitude(sb_sums, x, y)
print(f"r from {np.min(mag):.2f} to {np.max(mag):.2f} AB mag; "
      f"largest difference between the two: {np.max(np.abs(mag - mag_sb)):.1e} mag")

fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), layout="constrained")
lo, hi = np.nanpercentile(exp.image, [5, 99.5])
axes[0].imshow(exp.image, origin="lower", cmap="gray_r", vmin=lo, vmax=hi)
axes[0].scatter(x, y, s=60, facecolors="none", edgecolors="tab:red", linewidths=0.8)
axes[0].set_title(f"background-subtracted ({exp.unit})\n{int(good.sum())} measured sources")
im = axes[1].imshow(area, origin="lower", cmap="viridis")
fig.colorbar(im, ax=axes[1], label="arcsec²")
axes[1].set_title("pixel area |det J| from the TPV WCS")
axes[2].hist(mag, bins=20, color="tab:blue")
axes[2].set_xlabel("r (AB mag, 4″ aperture)")
axes[2].set_ylabel("sources")
axes[2].set_title("calibrated with ZTF's own zero point")
for ax in axes[:2]:
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
fig.savefig(out / "real_survey_file.png", dpi=80)
