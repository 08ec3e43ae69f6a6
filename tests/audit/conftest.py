"""The audit tests use the real single-node Elasticsearch from tests/es_node."""

from tests.es_node.fixtures import elasticsearch, elasticsearch_factory, es_index_prefix  # noqa: F401
