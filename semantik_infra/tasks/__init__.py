"""The task namespace shared by `tasks.py` (for `inv`) and the `semantik-infra` console script.
Task modules import only Invoke at module level; everything heavy is imported inside task bodies."""

from __future__ import annotations

from invoke import Collection

from semantik_infra.tasks import backup, env, postgres, setup, snapshot, sqlite_import, test


def build_namespace() -> Collection:
    """The root collection with every task collection."""
    postgres_tasks = Collection.from_module(postgres)
    extras = (
        backup.backup,
        backup.backups,
        backup.restore,
        backup.leftovers,
        backup.drill,
        backup.pull,
        sqlite_import.import_sqlite,
    )
    for extra in extras:
        postgres_tasks.add_task(extra)
    return Collection(
        setup.onboard,
        setup.doctor,
        Collection.from_module(env),
        postgres_tasks,
        Collection.from_module(snapshot),
        Collection.from_module(test),
    )


namespace = build_namespace()
