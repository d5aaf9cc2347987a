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
        def debug() -> bool:  # known once the group's callback has run
            return bool(ctx.obj and ctx.obj.get("debug"))

        try:
            return super().invoke(ctx)
        except PhotocalibError as exc:
            if debug():
                raise
            _fail(f"photocalib: error: {_one_line(exc)}", 2)
        except KeyboardInterrupt:
            if debug():
                raise
            # Work is written atomically: what finished is kept, and a rerun resumes.
            _fail("photocalib: interrupted; finished work is kept (rerun the same command to "
                  "resume)", 130)
        except MemoryError:
            if debug():
                raise
            _fail("photocalib: error: out of memory; give the command a smaller image or HDU, "
                  "or run it on a machine with more memory", 2)
        except RecursionError:
            if debug():
                raise
            _fail("photocalib: error: an input is nested too deeply to read (a configuration "
                  "table or header structure); simplify it", 2)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _fail(message: str, status: int) -> None:
    click.echo(message, err=True)
    sys.exit(status)


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
