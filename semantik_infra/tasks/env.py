"""The `env` collection: create and check the env file."""

from __future__ import annotations

from invoke import Context, task

from semantik_infra.tasks._common import env_target, infra_task, load


@task(
    help={
        "force": "Regenerate secrets that already have a value (the old file is kept as .env.<time>.bak)",
        "length": "Length of generated passwords (default 43 characters, 258 bits)",
        "example": "Example file in env/ to start from (default .env.example; .env.docker.example for Docker)",
    }
)
@infra_task
def init(c: Context, force: bool = False, length: int = 0, example: str = ".env.example") -> None:
    """Write .env from the example, generating every empty secret (mode 0600, atomic)."""
    from semantik_infra.console import step
    from semantik_infra.envfile import prepare_env_file

    project_dir, target = env_target()
    result = prepare_env_file(project_dir, target, force=force, password_length=length or None, example_name=example)
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
        step(f"{name} already has every secret: nothing to do")
    step(f"configuration is valid: {load().database.redacted()}")


@task
@infra_task
def check(c: Context) -> None:
    """Validate the configuration and print it (redacted) with where each value came from."""
    from semantik_infra.config import describe_settings

    print(describe_settings(load()))
