"""Tests and pytest fixtures for the real single-node Elasticsearch of ``bench/es_node``."""
