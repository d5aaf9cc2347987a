"""The ``photocalib`` command line.

Each sub-command lives in its own module and registers itself on :data:`main`; errors the
library raises on purpose become one line on stderr and a non-zero exit (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from ..errors import PhotocalibError

__all__ = ["main"]



class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PhotocalibError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"photocalib: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="photocalib")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """photocalib: Jacobian-aware photometric calibration of wide-field images."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# Every module in this package (one per command or group of commands) adds itself to `main`.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
