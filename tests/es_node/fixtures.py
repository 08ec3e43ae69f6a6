"""Pytest fixtures for a real Elasticsearch node.

Use with ``pytest_plugins = ["tests.es_node.fixtures"]`` (in a conftest) or import the fixtures.

- ``elasticsearch``: one node for the whole session, shared: do not stop or kill it; use unique
  index names (``es_index_prefix``) so tests do not see each other's documents.
- ``elasticsearch_factory``: start your own nodes (for stop/kill/restart tests); all are killed
  and their data removed at the end of the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.es_node import ESNode, ensure_built, start_elasticsearch

# One shared node per test process, even when several conftests import this fixture (each import
# registers its own session fixture; they all share this node and the last one out stops it).
_shared: dict[str, Any] = {"node": None, "users": 0}


@pytest.fixture(scope="session")
def elasticsearch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ESNode]:
    """A real single-node Elasticsearch shared by the session (started on first use, stopped at the end)."""
    node: ESNode | None = _shared["node"]
    if node is None or not node.alive():
        node = start_elasticsearch(data_dir=tmp_path_factory.mktemp("elasticsearch"))
        _shared["node"] = node
    _shared["users"] += 1
    try:
        yield node
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["node"] = None
            node.stop()


@pytest.fixture
def elasticsearch_factory(tmp_path: Path) -> Iterator[Callable[..., ESNode]]:
    """``elasticsearch_factory(port=None, data_dir=None, **kw)`` -> a started node owned by this test."""
    ensure_built()
    nodes: list[ESNode] = []

    def _start(port: int | None = None, data_dir: str | Path | None = None, **kwargs: Any) -> ESNode:
        node = start_elasticsearch(port, data_dir or tmp_path / f"es-{len(nodes)}", **kwargs)
        nodes.append(node)
        return node

    yield _start
    for node in nodes:
        node.thaw()  # a frozen (SIGSTOP) node ignores SIGTERM
        node.stop(timeout=30)


@pytest.fixture
def es_index_prefix(request: pytest.FixtureRequest) -> str:
    """A lowercase prefix unique to this test, for index / data stream names on the shared node."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"t-{name}-{uuid.uuid4().hex[:8]}"
