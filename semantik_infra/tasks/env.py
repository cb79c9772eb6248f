"""The `env` collection: create and check the env file."""

from __future__ import annotations

from invoke import Context

from semantik_infra.tasks._common import env_target, infra_task, load, task


@task(
    help={
        "force": "Regenerate the secrets that have a value; with a cluster, its password is changed on the server"
        " too (the old file is kept as .env.<time>.bak)",
        "length": "Length of generated passwords (default 43 characters, 258 bits)",
        "example": "Example file in env/ to start from (default .env.example; .env.docker.example for Docker)",
        "follow_symlinks": "If the env file is a symbolic link, write to the file it points to",
    }
)
@infra_task
def init(
    c: Context, force: bool = False, length: int = 0, example: str = ".env.example", follow_symlinks: bool = False
) -> None:
    """Write .env from the example, generating every empty secret (mode 0600, atomic, a .bak of any old file)."""
    from semantik_infra.console import step
    from semantik_infra.envfile import find_example, prepare_env_file

    project_dir, target = env_target()
    find_example(project_dir, example)  # a missing example is an error even when .env exists
    if force and target.exists():
        _force(length, follow_symlinks)
        return
    result = prepare_env_file(
        project_dir,
        target,
        force=force,
        password_length=length or None,
        example_name=example,
        follow_symlinks=follow_symlinks,
        waiting=lambda text: step(text, status="info"),
    )
    name = result.path.name
    if result.created:
        step(f"created {result.path} from env/{example} (mode 0600)")
    if result.generated:
        step(f"generated {', '.join(result.generated)} in {name} (values not shown)")
    if result.backup:
        step(f"kept the previous file as {result.backup}")
    if result.mode_fixed:
        step(f"tightened {name} to mode 0600")
    if not result.changed:
        step(f"{name} already has every secret: nothing to do", status="info")
    step(f"configuration is valid: {load().database.redacted()}")


def _force(length: int, follow_symlinks: bool) -> None:
    """--force on an existing file: never lock the user out of a cluster, never lose a key silently."""
    import os
    from pathlib import Path

    from semantik_infra.console import step
    from semantik_infra.rotation import regenerate_secrets

    done = regenerate_secrets(os.environ, Path.cwd(), step, length=length or None, follow_symlinks=follow_symlinks)
    step(f"generated {', '.join(done.changed)} in {done.path.name} (values not shown)")
    if done.backup:
        step(f"kept the previous file as {done.backup}")
    if done.needing_old_key:
        step(
            f"{done.needing_count} encrypted backups were made with the previous BACKUP_ENCRYPTION_KEY"
            f" ({done.needing_old_key}): it is kept in {done.backup}; keep that file to restore them",
            status="warn",
        )
    step(f"configuration is valid: {load().database.redacted()}")


@task
@infra_task
def check(c: Context) -> None:
    """Validate the configuration and print it (redacted), each value's source and what auto resolves to."""
    from semantik_infra.config import describe_settings
    from semantik_infra.errors import InfraError

    settings = load()
    resolved = None
    if settings.backend == "auto":
        from semantik_infra.backends import explain_auto

        try:
            choice = explain_auto(settings)
            resolved = f"{choice.backend} ({choice.reason})"
        except InfraError as error:
            resolved = f"nothing: {error}"
    print(describe_settings(settings, resolved_backend=resolved))
