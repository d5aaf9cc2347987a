"""Atomic writes: outputs get ordinary permissions, not the temporary file's 0600."""

import os
import stat

from photocalib._io import atomic_write


def test_atomic_write_gives_umask_permissions(tmp_path):
    target = tmp_path / "x.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("hi")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
