#!/usr/bin/env bash
# Quick start, command 2: install semantik-infra with its test extra into .venv and run the tests.
# As root with apt (CI, these dev machines) it also installs and starts a Docker engine and builds
# the stand-in PostgreSQL image, so the docker-marked tests run; elsewhere they skip with a reason.
# Under CI=true the docker tests must run: a missing engine fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -x scripts/ci-docker-setup.sh ]; then
  SEMANTIK_TEST_IMAGE="$(scripts/ci-docker-setup.sh | tail -n 1)"
  export SEMANTIK_TEST_IMAGE
elif [ "${CI:-}" = "true" ]; then
  echo "error: CI needs root and apt-get to install the Docker engine for the docker tests" >&2
  exit 1
fi

ruff check .
ruff format --check .
set +e
python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
