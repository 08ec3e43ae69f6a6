"""Makes the Elasticsearch fixtures available to the tests in this directory.

Other test areas: add ``pytest_plugins = ["tests.es_node.fixtures"]`` to the top-level tests/conftest.py
(pytest only honours pytest_plugins there), or import the fixtures into your own conftest.
"""

from tests.es_node.fixtures import elasticsearch, elasticsearch_factory, es_index_prefix  # noqa: F401
