"""Build the stand-in for `postgres:16-alpine` when no registry is reachable: a Debian bookworm
minbase root filesystem with postgresql-15 (debootstrap), plus an entrypoint that honours the
official image's contract (POSTGRES_USER/PASSWORD/DB, PGDATA, POSTGRES_INITDB_ARGS,
POSTGRES_HOST_AUTH_METHOD; initdb on an empty volume; `postgres` as CMD listening on all
interfaces), imported with `docker import`. Cached by tag: it builds once per machine.

    python tests/docker/image.py [--tag TAG] [--force]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TAG = "semantik-infra/postgres-test:15"
PG_MAJOR = 15
FALLBACK_MIRROR = "http://deb.debian.org/debian"
PG_BIN = f"/usr/lib/postgresql/{PG_MAJOR}/bin"

# The official image's entrypoint contract, reduced to what Semantik's compose file relies on.
ENTRYPOINT = r"""#!/bin/bash
set -Eeuo pipefail
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
    # As root: hand the data and socket directories to postgres, then drop privileges.
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ "$1" = 'postgres' ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}"
    : "${POSTGRES_DB:=$POSTGRES_USER}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != 'trust' ]; then
        echo 'error: POSTGRES_PASSWORD is not set (set POSTGRES_HOST_AUTH_METHOD=trust to allow that)' >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        pg_ctl -D "$PGDATA" -m fast -w stop
    fi
    echo 'PostgreSQL init process complete; ready for start up.'
fi

if [ "$1" = 'postgres' ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
"""


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The machine's own Debian mirror (deb822 sources, then sources.list), else deb.debian.org."""
    if sources.is_file():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        match = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\b", legacy.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return FALLBACK_MIRROR


def image_exists(tag: str) -> bool:
    """True if the engine already has an image with this tag."""
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_rootfs(root: Path, mirror: str) -> None:
    """debootstrap a minimal bookworm with PostgreSQL, then add the entrypoint and trim the fat."""
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include=postgresql-{PG_MAJOR}",
            "bookworm",
            str(root),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    entrypoint = root / "usr/local/bin/docker-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    for path in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(root / path, ignore_errors=True)
    # Debian's package created a cluster in /var/lib/postgresql/15/main; the image starts empty.
    shutil.rmtree(root / f"var/lib/postgresql/{PG_MAJOR}", ignore_errors=True)


def import_rootfs(root: Path, tag: str) -> None:
    """Stream the root filesystem into `docker import` with the official image's metadata."""
    changes = [
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
        'CMD ["postgres"]',
        f"ENV PATH={PG_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PGDATA=/var/lib/postgresql/data",
        "ENV LANG=C.UTF-8",
        "EXPOSE 5432",
    ]
    argv = ["docker", "import"]
    for change in changes:
        argv += ["-c", change]
    # `docker import` accepts no STOPSIGNAL change: the compose file sets stop_signal instead.
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    with tar.stdout:
        imported = subprocess.run([*argv, "-", tag], stdin=tar.stdout, stdout=subprocess.DEVNULL)
    tar_status = tar.wait()
    if imported.returncode != 0:
        raise RuntimeError(f"docker import failed with status {imported.returncode}")
    if tar_status != 0:
        raise RuntimeError("tar of the root filesystem failed")


def ensure_test_image(tag: str = DEFAULT_TAG, *, force: bool = False) -> str:
    """Build the stand-in image unless an image with `tag` exists; return the tag."""
    if not force and image_exists(tag):
        print(f"test image {tag} is cached", file=sys.stderr)
        return tag
    mirror = debian_mirror()
    started = time.monotonic()
    print(f"building test image {tag} from {mirror} (debootstrap, ~1 min)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="semantik-rootfs-") as scratch:
        root = Path(scratch) / "rootfs"
        build_rootfs(root, mirror)
        import_rootfs(root, tag)
    print(f"built {tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tag


def main() -> None:
    """Command line: build (or find cached) and print the tag."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = parser.parse_args()
    print(ensure_test_image(args.tag, force=args.force))


if __name__ == "__main__":
    main()
