"""Tests that currently fail because of bugs in layers still being edited; not collected.

Move a module up into tests/reliability once its bug is fixed (see the reliability report).
"""

collect_ignore_glob = ["*.py"]
