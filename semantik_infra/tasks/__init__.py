"""The task namespace shared by `tasks.py` (for `inv`) and the `semantik-infra` console script.
Task modules import only Invoke at module level; everything heavy is imported inside task bodies."""

from __future__ import annotations

from invoke import Collection

from semantik_infra.tasks import env, postgres, setup, test


def build_namespace() -> Collection:
    """The root collection with every task collection."""
    return Collection(
        setup.onboard,
        setup.doctor,
        Collection.from_module(env),
        Collection.from_module(postgres),
        Collection.from_module(test),
    )


namespace = build_namespace()
