#!/usr/bin/env bash
# Quick start, command 1: install semantik-infra into .venv and bring up a verified database.
# Idempotent: re-running it on a working setup changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/inv onboard "$@"
