"""The ``photocalib`` command line.

Each sub-command lives in its own module and registers itself on :data:`main`; errors the
library raises on purpose become one line on stderr and a non-zero exit (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import PhotocalibError

__all__ = ["main"]

#: Modules that add commands to the group; missing ones are skipped while they are being built.
_COMMAND_MODULES = ("photocalib.cli.commands",)


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


for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != _name:
            raise
