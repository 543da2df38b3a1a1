#!/usr/bin/env bash
# Builds troupe in the release preset and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target demo_pingring
./build/release/demos/demo_pingring "$@"
