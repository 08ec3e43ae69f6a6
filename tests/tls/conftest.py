"""The recording upstream of the security suite, for the TLS tests."""

from tests.security.conftest import upstream  # noqa: F401 (fixture)
