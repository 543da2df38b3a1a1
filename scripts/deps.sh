#!/usr/bin/env bash
# Installs what troupe needs to build and test on Debian 12 (run as root).
# Idempotent: does nothing when every package is already there.
set -euo pipefail
pkgs="cmake make pkg-config gcc libc6-dev clang libclang-rt-14-dev liburcu-dev libcriterion-dev"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120 $pkgs
fi
