"""The command line of the tools that write the repository's generated data files
(``deploy/tools/build_*.py``): write the file, or with ``--check`` report a committed file that is not
what the tool would write (exit 1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_or_check(tool: str, description: str, path: Path, text: str, header: str, unit: str) -> int:
    """Run ``tool``'s command line for ``path``, whose content is ``text`` (``header`` lines, then one
    ``unit`` a line)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is stale: run python deploy/tools/{tool}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({text.count(chr(10)) - header.count(chr(10))} {unit})")
    return 0
