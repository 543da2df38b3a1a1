#!/usr/bin/env bash
# Plots the medians of compare.sh's raw result lines (OUT=... of
# compare.sh) as grouped bars, one group per workload, log scale.
#   bench/plot.sh RAW_LINES OUT.png        (needs gnuplot: gnuplot-nox)
set -euo pipefail
raw=$1
png=$2
dat=$(mktemp)
awk '
  {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["bench"] SUBSEP f["peer"]; n[k]++; v[k, n[k]] = f["rate"] + 0
    if (!(f["bench"] in seen)) { seen[f["bench"]] = 1; order[++nb] = f["bench"] }
    delete f
  }
  function med(k,    m, i, j, t, a) {
    m = n[k]; if (!m) return 0
    for (i = 1; i <= m; i++) a[i] = v[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (i = 1; i <= nb; i++) {
      b = order[i]
      printf "%s %.0f %.0f %.0f\n", b, med(b SUBSEP "troupe"), med(b SUBSEP "caf"), med(b SUBSEP "erlang")
    }
  }' "$raw" > "$dat"
gnuplot <<GP
set terminal pngcairo size 1000,560 font "DejaVu Sans,11" noenhanced
set output "$png"
set title "troupe vs CAF 0.17 vs Erlang/OTP 25, same machine, one interleaved run (medians)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y 10
set yrange [1e5:1e8]
set ylabel "rate per second (log scale)"
set grid ytics
set key top right
set xtics nomirror
plot "$dat" using 2:xtic(1) title "troupe" lc rgb "#1f77b4", \
     "" using 3 title "CAF" lc rgb "#d62728", \
     "" using 4 title "Erlang" lc rgb "#2ca02c"
GP
rm -f "$dat"
echo "wrote $png"
