"""semantik-infra: PostgreSQL development and operations tooling for Semantik."""

__version__ = "0.1.0"
