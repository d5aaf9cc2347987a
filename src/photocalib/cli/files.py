"""Commands that work on one FITS file: ``area-map``, ``to-fluence``, ``to-surface-brightness``,
``calibrate``; each writes a new FITS file atomically and prints its path."""

from __future__ import annotations

import click

from . import main


def _hdu(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


_hdu_option = click.option("--hdu", default=None, metavar="INDEX|NAME",
                           help="Only this HDU (number or EXTNAME); default: every image HDU / the first.")
_out_option = click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
                           help="Output FITS file (default: beside the input, with a suffix).")


@main.command("area-map")
@click.argument("file", type=click.Path(dir_okay=False))
@_out_option
@_hdu_option
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
              show_default=True, help="Pixel type of the map.")
def area_map_cmd(file: str, out: str | None, hdu: str | None, dtype: str) -> None:
    """Write the pixel-area map |det J| (arcsec²) of every image HDU of FILE that has a WCS.

    Works on any FITS image with a celestial WCS (TAN, SIP, TPV, lookup-table distortions):
    one output HDU per input HDU, with the same WCS and BUNIT = 'arcsec2'.
    """
    from ..pipeline.tools import area_map

    click.echo(str(area_map(file, out, hdu=_hdu(hdu), dtype=dtype)))


def _convert(file: str, out: str | None, hdu: str | None, input_kind: str | None, kind: str) -> None:
    from ..pipeline.tools import convert_kind

    click.echo(str(convert_kind(file, kind, out, hdu=_hdu(hdu), input_kind=input_kind)))


_input_kind = click.option(
    "--input-kind", type=click.Choice(["FLUENCE", "SURFACE_BRIGHTNESS"], case_sensitive=False),
    default=None, help="What FILE is when it has no PCKIND keyword (default: SURFACE_BRIGHTNESS).")


@main.command("to-fluence")
@click.argument("file", type=click.Path(dir_okay=False))
@_out_option
@_hdu_option
@_input_kind
def to_fluence_cmd(file: str, out: str | None, hdu: str | None, input_kind: str | None) -> None:
    """Convert a surface-brightness image FILE to fluence (× pixel area; variance × area²)."""
    _convert(file, out, hdu, input_kind, "FLUENCE")


@main.command("to-surface-brightness")
@click.argument("file", type=click.Path(dir_okay=False))
@_out_option
@_hdu_option
@_input_kind
def to_sb_cmd(file: str, out: str | None, hdu: str | None, input_kind: str | None) -> None:
    """Convert a fluence image FILE to surface brightness (÷ pixel area; variance ÷ area²)."""
    _convert(file, out, hdu, input_kind, "SURFACE_BRIGHTNESS")


@main.command("calibrate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("calibration", type=click.Path(dir_okay=False))
@_out_option
@_hdu_option
def calibrate_cmd(file: str, calibration: str, out: str | None, hdu: str | None) -> None:
    """Apply a saved calibration (a PhotoCalib FITS file) to FILE: write fluence in nJy.

    CALIBRATION is e.g. RUN/calib/joint/visit-000001/det-000.fits from `photocalib run`.
    """
    from ..pipeline.tools import apply_calibration

    click.echo(str(apply_calibration(file, calibration, out, hdu=_hdu(hdu))))
