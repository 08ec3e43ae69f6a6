"""One-time preparation before the test run (``make test`` calls it): builds what the tests need and
caches it outside the clone — the tiny model and the Elasticsearch launcher — so that no individual test
pays for a cold build. Idempotent and quick when everything is already cached."""

from __future__ import annotations

import sys
import time

from bench.es_node import ensure_built
from bench.stack import tiny_model_dir


def main() -> int:
    t0 = time.monotonic()
    tiny_model_dir()
    ensure_built()
    print(f"tests.prepare: ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
