#!/usr/bin/env bash
# Quick start, command 1: install semantik-infra into .venv and bring up a verified database.
# Idempotent: re-running it on a working setup changes nothing. Options go to `inv onboard`:
#   --backend docker|native|external   --port N   --project-name NAME (docker compose project)
# and what onboarding uses is recorded in .env, e.g. ./scripts/onboard.sh --backend docker --port 5433
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# An editable install leaves our modules uncompiled; where PYTHONDONTWRITEBYTECODE is set, every
# task would compile them again (about 0.1 s each time).
.venv/bin/python -m compileall -q semantik_infra tasks.py >/dev/null
exec .venv/bin/inv onboard "$@"
