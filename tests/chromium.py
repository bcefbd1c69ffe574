"""Headless Chromium for the HTML tests: load a page, report what the browser saw, screenshot it.

Tests that use it skip with ``SKIP_REASON`` where Chromium is missing (CI's .ci/run installs
Debian's ``chromium``).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "chromium is not installed (apt-get install -y chromium)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]

# appended to the page: once everything has loaded, writes what the browser saw into the DOM
CHECK = """
<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const result = {images: imgs.length,
                  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
                  scrollWidth: document.documentElement.scrollWidth,
                  innerWidth: window.innerWidth,
                  textLength: document.body.innerText.trim().length,
                  bodyHeight: document.body.scrollHeight};
  const out = document.createElement('pre');
  out.id = 'rf-check';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
"""


def _command(work: Path, width: int, height: int) -> list[str]:
    return [CHROMIUM, *FLAGS, f"--user-data-dir={work / 'chromium-profile'}",
            f"--window-size={width},{height}", "--virtual-time-budget=10000"]


def check_page(html: Path, work: Path, width: int, height: int = 900) -> dict:
    """Load ``html`` at ``width`` pixels; return images, broken images, scrollWidth, innerWidth,
    textLength and bodyHeight as the browser measured them."""
    checked = work / f"checked-{width}.html"
    checked.write_text(Path(html).read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"),
                       encoding="utf-8")
    dom = subprocess.run(_command(work, width, height) + ["--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    found = re.search(r'<pre id="rf-check">(.*?)</pre>', dom)
    assert found, "the check script did not run"
    return json.loads(found.group(1))


def screenshot(html: Path, png: Path, work: Path, width: int = 1280, height: int = 900) -> Path:
    """A PNG of the page's first ``width`` × ``height`` pixels."""
    subprocess.run(_command(work, width, height) + [f"--screenshot={png}", Path(html).as_uri()],
                   capture_output=True, timeout=90)
    assert Path(png).is_file(), "chromium wrote no screenshot"
    return Path(png)
