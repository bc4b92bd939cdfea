#!/usr/bin/env bash
# Runs the test suite in the project's virtual environment (what CI runs): the import-layer
# contracts, then pytest. Arguments go to pytest; without test paths among them, all of tests/.
# pytest exit code 5 means "no tests were collected": for this project that is a broken
# checkout, so it is reported and turned into a failure instead of a silent green run.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray's node addresses on loopback (127.0.0.1).
export PYTHONHASHSEED=0 RAY_USAGE_STATS_ENABLED=0 RAY_DEDUP_LOGS=0 MPLBACKEND=Agg RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
"$BIN/lint-imports" || { echo "import contracts broken (workflows -> pipeline -> centernet)"; exit 1; }
paths=()
for arg in "$@"; do
  case "$arg" in tests|tests/*) paths+=("$arg") ;; esac
done
[ ${#paths[@]} -eq 0 ] && set -- tests "$@"
"$BIN/python" -m pytest --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating this as a failure" >&2
  exit 1
fi
exit "$rc"
