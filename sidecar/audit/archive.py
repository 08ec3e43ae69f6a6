"""``audit.archive_dir``: sealed spool segments copied to cheaper storage before they may be pruned.

Layout: ``<archive_dir>/<chain_id>/seg-<first seq>.jsonl[.gz]`` (the segment as the spool holds it,
compressed or not), ``checkpoints.jsonl`` (the chain's signed checkpoints and pruning notes up to the
last archived record) and ``dropped.jsonl`` (its loss notes in that range), so an archive directory is
itself a spool that ``custos audit verify <archive_dir>`` checks. Every file is written under a
temporary name, fsynced and renamed (then the directory is fsynced): a crash or a full archive volume
leaves the previous complete copy, never a torn one. Nothing here is ever deleted by Custos: the archive
is kept as long as the site's policy says (a mounted object store, NFS, a cheap disk).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import orjson

from custos.statefiles import atomic_file, write_atomic

from .compression import candidates, open_segment
from .spool import CHECKPOINTS, DROPPED


class Archive:
    def __init__(self, root: Path, chain_id: str) -> None:
        self.dir = Path(root).expanduser() / chain_id

    def has(self, segment: Path) -> bool:
        """The segment is archived (in either form)."""
        return any((self.dir / c.name).exists() for c in candidates(segment))

    def put_segment(self, segment: Path) -> Path:
        """Copy one sealed segment (whichever form exists now) atomically into the archive."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for src in candidates(segment):
            try:
                fin = open(src, "rb")
            except FileNotFoundError:
                continue
            dst = self.dir / src.name
            with fin, atomic_file(dst, sync_dir=True) as out:
                shutil.copyfileobj(fin, out, 1 << 20)
            # A plain copy made just before the spool compressed the segment: one form is enough.
            for other in candidates(dst):
                if other != dst:
                    with contextlib.suppress(FileNotFoundError):
                        other.unlink()
            return dst
        raise FileNotFoundError(2, "No such file or directory", str(segment))

    def put_notes(self, chain_dir: Path, upto_seq: int) -> None:
        """The chain's checkpoints and pruning notes covering seq <= ``upto_seq`` (each line is signed
        on its own, so a filtered copy verifies), and its loss notes from that range."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, key in ((CHECKPOINTS, "seq"), (DROPPED, "from")):
            src = chain_dir / name
            if not src.exists():
                continue
            keep = []
            with open(src, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a line being written right now
                    try:
                        doc = orjson.loads(line)
                        audit = doc.get("audit", doc) if name == CHECKPOINTS else doc
                        seq = int(audit[key])
                    except (ValueError, KeyError, TypeError, AttributeError):
                        keep.append(line)  # not ours to judge: the verifier reports it
                        continue
                    if seq <= upto_seq:
                        keep.append(line)
            write_atomic(self.dir / name, b"".join(keep), sync_dir=True)


def verify_copy(src: Path, dst: Path) -> bool:
    """The archived copy holds the same records as the spool's segment (used by tests and tools)."""
    with open_segment(src) as a, open_segment(dst) as b:
        return a.read() == b.read()
