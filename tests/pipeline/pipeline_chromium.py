"""Open an HTML file in headless Chromium and report whether every image loaded."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the page (beside it, so relative image paths resolve): after load,
# writes how many images there are and how many decoded with a non-zero width.
_PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement('pre');
  p.id = 'probe';
  p.textContent = 'IMAGES ' + imgs.length + ' LOADED ' + ok + ' TITLE ' + document.title;
  document.body.appendChild(p);
});
</script>
"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def probe_page(html_path: Path, timeout: float = 60.0) -> tuple[int, int, str]:
    """(number of images, number loaded, dumped DOM) of ``html_path`` rendered by Chromium."""
    exe = chromium_path()
    assert exe is not None
    text = html_path.read_text(encoding="utf-8")
    probe = html_path.with_name("_probe_" + html_path.name)
    probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(
                [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                 probe.resolve().as_uri()],
                capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        probe.unlink()
    match = re.search(r"IMAGES (\d+) LOADED (\d+)", proc.stdout)
    assert match, f"chromium rendered nothing useful (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return int(match.group(1)), int(match.group(2)), proc.stdout
