"""Shared pytest setup; fixtures live in tests/fixtures/ and are loaded as plugins (see pyproject.toml)."""
