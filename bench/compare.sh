#!/usr/bin/env bash
# Side-by-side benchmark run: troupe, CAF and Erlang interleaved.
#
#   bench/compare.sh [ROUNDS]        (default 5 rounds)
#
# Builds troupe_bench in the release preset, then for each round and each
# workload runs troupe, CAF and Erlang one after another (A B C A B C ...),
# each after waiting for idle CPUs, so slow phases of a shared machine hit
# all three alike. Peers run through ../shared/peers/run.sh (one run per
# call). Prints every result line, then a table of medians with the ratios
# troupe/CAF and troupe/Erlang. Installs the peers' packages if missing.
#
# Environment: BENCHES (default: the seven peer workloads), PEERS_DIR,
# WAIT_IDLE (seconds, default 20), OUT (file for the raw lines).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers}
rounds=${1:-5}
benches=${BENCHES:-"pingpong ring fanin spawn broadcast ask pipeline"}
wait_idle=${WAIT_IDLE:-20}
out=${OUT:-$(mktemp)}

pkgs="libcaf-dev erlang-base g++ make"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs
fi
bash "$root/scripts/deps.sh"
(cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release --target troupe_bench >/dev/null)
tb=$root/build/release/bench/troupe_bench

# Waits (at most $wait_idle s) until the CPUs were under 10% busy for 0.5 s.
await_idle() {
  local deadline=$((SECONDS + wait_idle)) b0 t0 b1 t1
  while ((SECONDS < deadline)); do
    read -r b0 t0 < <(awk '/^cpu / {b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat)
    sleep 0.5
    read -r b1 t1 < <(awk '/^cpu / {b=$2+$3+$4+$7+$8+$9; print b, b+$5+$6}' /proc/stat)
    ((t1 > t0 && 10 * (b1 - b0) < t1 - t0)) && return 0
  done
  echo "compare.sh: CPUs still busy; running anyway" >&2
}

: > "$out"
for ((r = 1; r <= rounds; r++)); do
  for b in $benches; do
    await_idle
    if ! timeout -k 5 60 "$tb" "$b" | tee -a "$out"; then
      echo "compare.sh: troupe $b failed" >&2
    fi
    for p in caf erlang; do
      PEERS=$p BENCHES=$b RUNS=1 WAIT_IDLE=$wait_idle "$peers/run.sh" | tee -a "$out" ||
        echo "compare.sh: $p $b failed" >&2
    done
  done
done

echo
echo "Medians of $rounds rounds ($(nproc) CPUs, $(date -u +%F)):"
echo
awk -v order="$benches" '
  {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["bench"] SUBSEP f["peer"]
    n[k]++; v[k, n[k]] = f["rate"] + 0
    if ("p99_us" in f) { lat[k] = 1; p50[k, n[k]] = f["p50_us"] + 0; p99[k, n[k]] = f["p99_us"] + 0 }
    benches[f["bench"]] = 1
    delete f
  }
  function median(k) { return med(k, v) }
  function med(k, arr,    m, i, j, t, a) {
    m = n[k]; if (!m) return 0
    for (i = 1; i <= m; i++) a[i] = arr[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    printf "| bench | troupe | CAF | Erlang | troupe/CAF | troupe/Erlang |\n"
    printf "| --- | ---: | ---: | ---: | ---: | ---: |\n"
    nb = split(order, list, " ")
    for (i = 1; i <= nb; i++) {
      b = list[i]
      if (!(b in benches)) continue
      t = median(b SUBSEP "troupe"); c = median(b SUBSEP "caf"); e = median(b SUBSEP "erlang")
      printf "| %s | %.0f | %.0f | %.0f | %s | %s |\n", b, t, c, e,
        c ? sprintf("%.1fx", t / c) : "-", e ? sprintf("%.1fx", t / e) : "-"
    }
    printf "\nLatency (median of runs), microseconds:\n\n| bench | peer | p50 | p99 |\n| --- | --- | ---: | ---: |\n"
    for (k in lat) {
      split(k, bp, SUBSEP)
      printf "| %s | %s | %.2f | %.2f |\n", bp[1], bp[2], med(k, p50), med(k, p99)
    }
  }' "$out"
echo
echo "raw lines: $out"
