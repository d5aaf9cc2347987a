"""The static HTML report of a pipeline run: plots as PNG files beside ``index.html``.

It reads only the small summary tables a run leaves in ``tables/`` (and the coadd), so
``photocalib report DIR`` can redraw it; a missing piece becomes a "not available" note.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import InputError
from . import plots
from .layout import RunLayout, read_json

__all__ = ["Section", "write_report", "read_table"]

log = logging.getLogger("photocalib.pipeline")


@dataclass
class Section:
    """One block of the report: a titled figure, or a note saying why it is missing."""

    title: str
    caption: str
    png: str | None = None
    note: str | None = None
    extra_html: str = ""
    children: list[Section] = field(default_factory=list)


class _Missing(Exception):
    """A piece of the run the section needs is absent (not an error: the report says so)."""


class _NotApplicable(Exception):
    """The section has nothing to show for runs of this kind (it is left out of the report)."""


def read_table(path: Path):
    """Read a Parquet summary table as a pandas DataFrame (``_Missing`` if absent)."""
    import pandas as pd

    if not path.is_file():
        raise _Missing(f"{path.name} was not produced by this run")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable table is reported, not fatal
        raise _Missing(f"{path.name} could not be read ({exc})") from exc


def _panels(df, column: str) -> list[plots.FocalPlanePanel]:
    if column not in df.columns or not np.isfinite(df[column].to_numpy(float)).any():
        raise _Missing(f"no {column!r} values in the focal-plane table")
    panels = []
    for det, g in df.groupby("detector", sort=True):
        g = g.sort_values(["row", "col"])
        ny, nx = int(g["row"].max()) + 1, int(g["col"].max()) + 1
        if ny * nx != len(g):
            continue
        shape = (ny, nx)
        panels.append(plots.FocalPlanePanel(g["xi"].to_numpy(float).reshape(shape),
                                            g["eta"].to_numpy(float).reshape(shape),
                                            g[column].to_numpy(float).reshape(shape), str(det)))
    if not panels:
        raise _Missing("the focal-plane table has no complete detector grid")
    return panels


def _area_map(run: RunLayout):
    df = read_table(run.tables / "focal_plane.parquet")
    return plots.focal_plane_map(_panels(df, "area"), "Pixel area |det J| from the WCS",
                                 "arcsec²")


def _chosen_model(run: RunLayout) -> str:
    if run.run_json.is_file():
        try:
            return str(read_json(run.run_json).get("joint_model", "joint"))
        except InputError:
            pass
    return "joint"


def _star_flat(run: RunLayout):
    df = read_table(run.tables / "focal_plane.parquet")
    fitted = _panels(df, "star_flat_mmag")
    others = {c.split("__", 1)[1]: _panels(df, c) for c in df.columns if c.startswith("star_flat_mmag__")}
    try:
        true = _panels(df, "truth_star_flat_mmag")
    except _Missing:
        true = None
    if not others and true is None:
        return plots.focal_plane_map(fitted, "Fitted star flat", "mmag", symmetric=True, cmap="RdBu_r")
    sets = {f"{_chosen_model(run)} (the run's calibration)" if others else "fitted (joint calibration)": fitted}
    sets.update(others)
    if true is not None:
        sets["truth (simulator)"] = true
    return plots.focal_plane_maps(sets, "Star flat: calibration relative to its median", "mmag")


def _grey(run: RunLayout):
    df = read_table(run.tables / "grey.parquet")
    if len(df) == 0:
        raise _Missing("the joint fit gave no grey terms")
    truth = df["truth_mmag"].to_numpy(float) if "truth_mmag" in df.columns else None
    if truth is not None and not np.isfinite(truth).any():
        truth = None
    others = {c.split("__", 1)[1]: df[c].to_numpy(float) for c in df.columns if c.startswith("grey_mmag__")}
    if not others:
        return plots.grey_terms(df["visit"].to_numpy(), df["grey_mmag"].to_numpy(float), truth)
    fitted = {_chosen_model(run): df["grey_mmag"].to_numpy(float), **others}
    return plots.grey_terms_models(df["visit"].to_numpy(), fitted, truth)


def _residual_frame(run: RunLayout):
    df = read_table(run.tables / "residuals.parquet")
    if len(df) == 0:
        raise _Missing("no stars were matched to the truth or the reference catalog")
    return df


def _by_calibration(df, column: str) -> dict[str, np.ndarray]:
    return {str(name): g[column].to_numpy(float) for name, g in df.groupby("calibration", sort=False)}


def _residual_maps(run: RunLayout):
    df = _residual_frame(run)
    against = str(df["against"].iloc[0]) if "against" in df.columns else "truth"
    return plots.residual_maps(_by_calibration(df, "xi"), _by_calibration(df, "eta"),
                               _by_calibration(df, "residual_mmag"),
                               f"Calibrated − {against} across the focal plane")


def _residual_radius(run: RunLayout):
    df = _residual_frame(run)
    return plots.residual_vs_radius(_by_calibration(df, "radius_arcmin"),
                                    _by_calibration(df, "residual_mmag"))


def _residual_colour(run: RunLayout):
    df = _residual_frame(run)
    if "colour" not in df.columns or not np.isfinite(df["colour"].to_numpy(float)).any():
        raise _Missing("no colours are known for the matched stars")
    label = str(df["colour_name"].iloc[0]) if "colour_name" in df.columns else "colour (mag)"
    return plots.residual_vs_colour(_by_calibration(df, "colour"),
                                    _by_calibration(df, "residual_mmag"), colour_label=label)


def _colour_term(run: RunLayout):
    from ..refcat import ColourTerm

    paths = sorted((run.root / "calib" / "colour_term").rglob("det-*.fits"))
    if not paths:
        raise _NotApplicable("no colour term was used")
    df = read_table(run.tables / "colour_term.parquet")
    # The offsets are for one band (the summary's); draw the term of an image in that band.
    band = str(df["band"].iloc[0]) if len(df) else None
    term = next((t for t in map(ColourTerm.read, paths) if t.target_band == band), None) or ColourTerm.read(paths[0])
    df = df[df["band"] == term.target_band]
    blue, red = term.colour_bands
    return plots.colour_term_fit(df["colour"].to_numpy(float), df["offset_mag"].to_numpy(float), term,
                                 colour_label=f"{blue} − {red} (reference, AB mag)")


def _coadd(run: RunLayout, size: int):
    from .._io import open_fits

    if not run.coadd.is_file():
        raise _Missing("no coadd was made")
    with open_fits(run.coadd) as hdul:
        data = next((h.data for h in hdul if getattr(h, "data", None) is not None
                     and np.ndim(h.data) == 2), None)
        if data is None:
            raise _Missing("the coadd file has no image")
        data = np.asarray(data, dtype=float)
    ny, nx = data.shape
    half = size // 2
    cy, cx = ny // 2, nx // 2
    cut = data[max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    return plots.coadd_cutout(cut)


def _background_matching(run: RunLayout):
    from .._io import open_fits
    from ..warp.coadd import read_background_fields

    if not run.coadd.is_file():
        raise _Missing("no coadd was made")
    fields = read_background_fields(run.coadd)
    if not fields:
        raise _Missing("the coadd was made without background matching ([warp] background_matching = false)")
    from ..fields import field_from_table

    with open_fits(run.coadd) as hdul:
        image = next(h for h in hdul if getattr(h, "data", None) is not None and np.ndim(h.data) == 2)
        ny, nx = image.data.shape
        reference = next((h.header.get("BGREF") for h in hdul if h.name.startswith("BGMATCH_")), "?")
        coadd_bg = None
        if "BGCOADD" in hdul:
            from astropy.table import Table

            coadd_bg = field_from_table(Table.read(hdul["BGCOADD"]))
    # sampled on a coarse grid: the fields are smooth
    xs = np.linspace(0, nx - 1, min(nx, 96))
    ys = np.linspace(0, ny - 1, min(ny, 96))
    labels: dict[str, np.ndarray] = {}
    for key, f in sorted(fields.items(), key=lambda kv: str(kv[0])):
        label = f"{key[0]} det {key[1]}" if isinstance(key, tuple) else str(key)
        labels[label] = np.asarray(f.evaluate(xs[None, :], ys[:, None]), float) * np.ones((ys.size, xs.size))
    bg = (np.asarray(coadd_bg.evaluate(xs[None, :], ys[:, None]), float) * np.ones((ys.size, xs.size))
          if coadd_bg is not None else None)
    return plots.background_fields(labels, (0.0, float(nx - 1), 0.0, float(ny - 1)), str(reference), bg)


_FIGURES: list[tuple[str, str, str, Callable[..., object]]] = [
    ("area", "Focal-plane pixel area",
     "The pixel area |det J| (arcsec²) of every detector, from its WCS; the flat-fielded "
     "(surface-brightness) image differs from the fluence image by exactly this map.", _area_map),
    ("starflat", "Star flat",
     "The joint calibration of the first visit across the focal plane relative to its median "
     "(mmag): the star flat, the fluence-to-fluence correction that the dome flat leaves, for "
     "each joint model fitted; beside them the simulator's true star flat when the run was "
     "given the truth.", _star_flat),
    ("grey", "Grey terms", "The calibration level fitted per visit (mean over detectors seen in "
     "every visit, mean removed), with the simulator's truth when the run was given it: "
     "extinction × grey cloud × exposure time. Aperture losses, which change with seeing, are "
     "in the fit but not in that truth.", _grey),
    ("residual_map", "Residuals across the focal plane",
     "Calibrated star magnitudes minus the truth (or the reference catalog), for every "
     "calibration side by side on one colour scale: the three joint models (monolithic, "
     "separated, reference-free; fitted on the same stars when the problem is small, the "
     "configured one writing the calibrations) and the single-detector Jacobian-aware and legacy ones.",
     _residual_maps),
    ("residual_radius", "Radial trend",
     "Binned median residual against distance from the pointing: the legacy calibration "
     "carries the pixel-area trend.", _residual_radius),
    ("residual_colour", "Residual against colour",
     "Median residual in bins of stellar colour (equal numbers of stars per bin), with the "
     "standard error of each median: a chromatic flat or throughput leaves a slope. With a "
     "survey reference carried into the band by a colour term, the colour is the term's and the "
     "residuals are about the term: flat where the colour term fits.",
     _residual_colour),
    ("colour_term", "Colour-term fit",
     "The colour term that carried the survey reference into the instrument's band (solid; "
     "dashed lines: its valid colour range), and the matched bright stars' calibrated "
     "instrument magnitude minus their reference-band magnitude before the term, as medians in "
     "bins of reference colour ± standard error. The points follow the curve where the term "
     "fits; a constant offset between them is the calibration's zero point.", _colour_term),
    ("background_matching", "Background matching",
     "The smooth background fitted to each visit's difference from the reference visit on the "
     "coadd grid (fluence warps differenced, so the sources cancel; fitted as surface brightness, "
     "nJy/arcsec²) and subtracted before stacking, one colour scale for all visits; and the one "
     "large-scale background of the stack when it was subtracted.", _background_matching),
]


def _headline_table(run: RunLayout) -> str:
    rows: list[tuple[str, str, str, str]] = []
    path = run.tables / "headline.json"
    if path.is_file():
        try:
            for item in read_json(path):
                value = item.get("value")
                text = f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))
                floor = item.get("floor")
                floor_text = ""
                if isinstance(floor, float) and np.isfinite(floor):
                    above = np.sqrt(max(float(value) ** 2 - floor**2, 0.0)) if isinstance(value, float) else np.nan
                    floor_text = f"{floor:.3g} (RMS − floor in quadrature: {above:.3g})"
                rows.append((html.escape(str(item.get("name", ""))), text,
                             html.escape(str(item.get("unit", ""))), floor_text))
        except (InputError, AttributeError, TypeError) as exc:
            log.warning("headline numbers unreadable: %s", exc)
    timings = {}
    if run.run_json.is_file():
        try:
            timings = read_json(run.run_json).get("timings", {})
        except (InputError, AttributeError):
            timings = {}
    for step, seconds in timings.items():
        rows.append((f"time: {html.escape(str(step))}", f"{float(seconds):.1f}", "s", ""))
    if not rows:
        return "<p class='na'>Not available: the run recorded no headline numbers.</p>"
    body = "\n".join(f"<tr><td>{a}</td><td class='num'>{b}</td><td>{c}</td><td class='num'>{d}</td></tr>"
                     for a, b, c, d in rows)
    return ("<table><thead><tr><th>quantity</th><th>value</th><th>unit</th>"
            "<th title='photon and read noise alone, from the variance planes, for the same stars'>"
            "noise floor</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
figure { margin: 0.5em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .caption { color: #555; font-size: 0.9em; }
.na { color: #a33; font-style: italic; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def write_report(run_dir: str | os.PathLike, cutout_size: int = 200, dpi: int = 90) -> Path:
    """Write ``run_dir/report/index.html`` and its PNG plots from what the run produced.

    Parameters
    ----------
    run_dir : path
        The output directory of ``photocalib run``.
    cutout_size : int
        Side in pixels of the coadd cutout.
    dpi : int
        Resolution of the PNG plots.

    Returns
    -------
    pathlib.Path
        The report's ``index.html``.

    Raises
    ------
    InputError
        If ``run_dir`` is not a directory.
    """
    run = RunLayout(Path(run_dir))
    if not run.root.is_dir():
        raise InputError(f"{run.root}: not a directory; give the output directory of `photocalib run`")
    run.report_dir.mkdir(parents=True, exist_ok=True)
    figures = list(_FIGURES) + [("coadd", "Coadd cutout",
                                 "The centre of the coadd of the calibrated, warped fluence "
                                 "images (nJy per pixel, asinh stretch).",
                                 lambda r: _coadd(r, cutout_size))]
    sections: list[Section] = []
    for key, title, caption, make in figures:
        section = Section(title, caption)
        try:
            fig = make(run)
            png = plots.figure_to_png(fig, dpi=dpi)
            name = f"{key}.png"
            with atomic_write(run.report_dir / name) as tmp:
                tmp.write_bytes(png)
            section.png = name
        except _NotApplicable:
            continue
        except _Missing as exc:
            section.note = f"Not available: {exc}."
        except Exception as exc:  # noqa: BLE001 - one broken plot must not lose the report
            log.warning("report section %r failed: %s", title, exc)
            section.note = f"Not available: drawing it failed ({type(exc).__name__}: {exc})."
        sections.append(section)

    info = {}
    if run.run_json.is_file():
        try:
            info = read_json(run.run_json)
        except InputError:
            info = {}
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<title>photocalib report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>photocalib run report</h1>",
        f"<p class='caption'>Run directory <code>{html.escape(str(run.root.resolve()))}</code>; "
        f"calibration model <b>{html.escape(str(info.get('joint_model', 'n/a')))}</b>; "
        f"report written {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        "<h2>Headline numbers</h2>", _headline_table(run),
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.png:
            parts.append(f"<figure><img src='{html.escape(s.png)}' alt='{html.escape(s.title)}'>"
                         f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")
        else:
            parts.append(f"<p class='caption'>{html.escape(s.caption)}</p>"
                         f"<p class='na'>{html.escape(s.note or 'Not available.')}</p>")
    for key, title in (("failed", "Steps that failed"), ("skipped", "Steps skipped")):
        entries = info.get(key, {})
        if entries:
            items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                            for k, v in entries.items())
            parts.append(f"<h2>{title}</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    with atomic_write(run.report) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return run.report
