"""A headless baresip driven over its ctrl_tcp socket, for the integration tests."""
