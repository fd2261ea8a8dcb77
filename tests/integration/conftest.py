"""Server fixtures for the network integration tests (shared with tests/contract)."""

from fixtures.servers import servers  # noqa: F401 - a fixture
