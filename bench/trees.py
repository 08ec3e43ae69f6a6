"""Another revision's code beside the working tree's, for side-by-side benchmarks in one run."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def archive_sidecar(rev: str, dest: Path) -> str | None:
    """Write the ``sidecar`` package of git revision ``rev`` of this repository into ``dest`` (a
    directory to put on ``PYTHONPATH``). Returns git's complaint when ``rev`` has none, else None."""
    archive = subprocess.run(["git", "archive", rev, "sidecar"], cwd=ROOT, capture_output=True)
    if archive.returncode:
        return archive.stderr.decode().strip()
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return None
