#!/usr/bin/env bash
# Runs the whole suite the way CI does: every tool present, slow tests included, two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
export COFFER_REQUIRE_ALL=1
exec .venv/bin/pytest -n 2 -q "$@"
