"""Fixtures shared by the integration tests' modules (each defined once, so a session-scoped one
is made once per run)."""

from tests.integration.sakila import sakila, sakila_pg_template

__all__ = ["sakila", "sakila_pg_template"]
