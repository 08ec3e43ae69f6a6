"""The audit tests use the real single-node Elasticsearch from tests/es_node, and the recording upstream
of the security suite where no model is needed."""

from tests.es_node.fixtures import elasticsearch, elasticsearch_factory, es_index_prefix  # noqa: F401
from tests.security.conftest import upstream  # noqa: F401 (the recording upstream)
