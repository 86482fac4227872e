"""Headless Chromium for the report: screenshots of the static pages (the explorer, Snakemake's report.html).

The browser is Debian's ``chromium`` (or ``$INSTAG_CHROMIUM``); it runs with a fresh profile, no network
services, no GPU and no sandbox (containers), and is stopped after ``timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import InstagError

#: Flags for a quiet, offline, throwaway browser.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    env = os.environ.get("INSTAG_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html, png, *, fragment: str = "", width: int = 1280, height: int = 900, timeout: float = 60.0) -> dict:
    """Render ``html`` (a local file) and write a PNG of the viewport to ``png``."""
    browser = find_chromium()
    if browser is None:
        raise InstagError(
            f"no Chromium found (tried $INSTAG_CHROMIUM, {', '.join(CANDIDATES)}): install Debian's chromium"
        )
    url = Path(html).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.stem + ".tmp.png")
    with tempfile.TemporaryDirectory(prefix="instag-chromium-") as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            f"--screenshot={tmp}",
            url,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InstagError(f"Chromium did not finish within {timeout:g} s: {' '.join(cmd)}") from None
    if proc.returncode != 0 or not tmp.is_file():
        raise InstagError(f"Chromium failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    tmp.replace(png)
    return {"png": str(png), "url": url, "bytes": png.stat().st_size}
