"""Server fixtures for the backend conformance suite (shared with tests/integration)."""

from fixtures.servers import servers  # noqa: F401 - a fixture
