"""The recording upstream of the security suite, for identity tests that need no model."""

from tests.security.conftest import upstream  # noqa: F401 (fixture)
