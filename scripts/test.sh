#!/usr/bin/env bash
# Builds and runs every test: Criterion unit tests, stress programs, the
# benchmark smoke runs and the install test in the release, debug and
# asan (ASan+UBSan) presets; the stress programs under TSan in the tsan
# preset (Criterion cannot run under TSan). Usage: scripts/test.sh [preset...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(release debug asan tsan)
for p in "${presets[@]}"; do
  echo "=== preset $p"
  cmake --preset "$p" >/dev/null
  cmake --build --preset "$p"
  ctest --preset "$p"
done
