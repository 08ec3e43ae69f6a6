"""One-time preparation before the test run (``make test`` calls it): builds what the tests need and
caches it outside the clone — the tiny model and the Elasticsearch launcher — so that no individual test
pays for a cold build. Idempotent and quick when everything is already cached."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.procs import CACHE, custos_cmd


def main() -> int:
    t0 = time.monotonic()
    from inference.tiny import TINY_MODEL_VERSION

    target = CACHE / "models" / f"tiny-{TINY_MODEL_VERSION}"
    if not (target / "config.json").exists():
        subprocess.run(custos_cmd("inference", "make-tiny-model", str(target)), check=True)
    from tests.es_node import ensure_built

    ensure_built()
    print(f"tests.prepare: ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
