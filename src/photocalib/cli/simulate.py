"""``photocalib simulate``: render a simulated survey with known truth to a directory.

Writes raw visits, flats, the reference catalog and the truth (see :mod:`photocalib.sim`).
"""

from __future__ import annotations

import click

from . import main


@main.command("simulate")
@click.option("--preset", default="hsc-like", show_default=True,
              type=click.Choice(["hsc-like", "megacam-like", "decam-like"]), help="Camera preset.")
@click.option("--visits", "n_visits", default=10, show_default=True, type=click.IntRange(min=1),
              help="Number of visits.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--detector-size", default="512x512", show_default=True,
              help="Pixels per detector as NXxNY, or 'full' for the real camera's detectors.")
@click.option("--detectors", "n_detectors", default="16", show_default=True,
              help="Number of detectors, or 'full' for the real camera's count.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of every random draw.")
@click.option("--band", default="r", show_default=True, type=click.Choice(["u", "g", "r", "i", "z", "y"]))
@click.option("--star-density", default=1.0e5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Stars per square degree between the magnitude limits.")
@click.option("--mag-range", default=(16.0, 24.0), show_default=True, type=(float, float),
              help="Bright and faint AB magnitude limits of the stars.")
@click.option("--tree-rings/--no-tree-rings", default=False, show_default=True)
@click.option("--mono-flats/--no-mono-flats", default=None,
              help="Write monochromatic flats (default: for chromatic presets).")
@click.option("--mono-step", default=5.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Wavelength step (nm) of the monochromatic flats.")
@click.option("--grey-gradient", default=0.0, show_default=True, type=float,
              help="Scatter (mag) of a per-visit linear grey gradient at the field edge.")
@click.option("--psf", default="moffat", show_default=True, type=click.Choice(["moffat", "kolmogorov"]))
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Local Dask workers (default 2).")
@click.option("--scheduler", default=None, help="dask.distributed scheduler address (default: local threads).")
def simulate_command(preset, n_visits, out_dir, detector_size, n_detectors, seed, band, star_density, mag_range,
                     tree_rings, mono_flats, mono_step, grey_gradient, psf, workers, scheduler) -> None:
    """Simulate a survey: raw/, flats/, refcat.parquet and truth/ in OUT."""
    from ..errors import InputError
    from ..sim import simulate

    if detector_size == "full":
        shape = None
    else:
        try:
            nx, ny = (int(v) for v in detector_size.lower().split("x"))
        except ValueError:
            raise InputError(f"--detector-size {detector_size!r}: use NXxNY (e.g. 512x512) or 'full'") from None
        shape = (ny, nx)
    if n_detectors == "full":
        ndet = None
    else:
        try:
            ndet = int(n_detectors)
        except ValueError:
            raise InputError(f"--detectors {n_detectors!r}: use an integer or 'full'") from None
    client = None
    if scheduler:
        from distributed import Client

        client = Client(scheduler)
    try:
        res = simulate(out_dir, preset=preset, n_visits=n_visits, detector_shape=shape, n_detectors=ndet, seed=seed,
                       band=band, star_density=star_density, star_mag_range=tuple(mag_range), tree_rings=tree_rings,
                       mono_flats=mono_flats, mono_step_nm=mono_step, survey_options={"grey_gradient_mag": grey_gradient, "psf": psf},
                       client=client, num_workers=workers)
    finally:
        if client is not None:
            client.close()
    click.echo(f"simulated {len(res.raw_paths)} visits x {res.camera.n_detectors} detectors "
               f"({res.camera.config.detector_shape[1]}x{res.camera.config.detector_shape[0]} px), "
               f"{len(res.stars)} stars, {res.refcat.num_rows} in the reference catalog, "
               f"in {res.elapsed_s:.1f} s -> {res.out_dir}")
