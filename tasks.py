"""Invoke entry point: `inv --list`. The tasks live in semantik_infra.tasks."""

from semantik_infra.tasks import namespace as ns

__all__ = ["ns"]
