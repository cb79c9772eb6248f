#!/usr/bin/env bash
# Make the docker tests runnable on a Debian machine, as root: install the Docker engine, compose
# v1 and debootstrap if missing, start dockerd if no engine answers, and build (or find cached)
# the stand-in PostgreSQL image. Idempotent. Progress goes to stderr; the last stdout line is the
# image tag.
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

python3 tests/docker/image.py "$@" | tail -n 1
