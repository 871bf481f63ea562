#!/bin/sh
# Reproduces every figure of docs/benchmarks.md.
#
#   bench/run.sh                 # 3 runs, results in bench/results/
#   RUNS=5 bench/run.sh -profile # more runs; CPU profiles of spool serve (run 1)
#   COST=0 bench/run.sh          # without the cost scenario
#
# Needs Go and Debian's postgresql package (initdb and postgres are found as
# internal/testpg finds them). It starts its own throwaway PostgreSQL
# cluster, builds bin/spool, runs River (bench/river, a module of its own)
# and Spool on PostgreSQL and SQLite side by side, and writes
# results.json, summary.md and benchmarks.svg; then the cost scenario (CPU
# per task at fixed rates and idle, with PostgreSQL at its default
# durability: bench/results/cost/cost.json, cost.md, cost.svg); then the
# `go test -bench` results of the hot paths (go-test-bench.txt, with
# medians of -count 3).
# Arguments are passed to the bench/river program (see `go run . -h` there).
#
# The figures are only comparable on an idle machine: the script prints the
# load average before and after, and every run records it.
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
OUT=bench/results
mkdir -p "$OUT"

echo "== load before: $(cat /proc/loadavg)"
# The commit measured goes into `spool version`, which results.json records.
COMMIT=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- cmd internal go.mod go.sum || echo -dirty)
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.commit=$COMMIT" -o bin/spool ./cmd/spool
(cd bench/river && go run . -only main -runs "$RUNS" -spool ../../bin/spool -out ../results "$@")
if [ "${COST:-1}" != 0 ]; then
	echo "== cost per task, load: $(cat /proc/loadavg)"
	mkdir -p "$OUT/cost"
	(cd bench/river && go run . -only cost -durable -spool ../../bin/spool -out ../results/cost "$@")
fi

echo "== go test -bench (hot paths), load: $(cat /proc/loadavg)"
{
	go test -run '^$' -bench . -benchmem -count 3 ./webhook ./internal/api
	go test -run '^$' -bench . -benchmem -count 3 -benchtime 2s ./internal/store/sqlite ./internal/store/postgres
	go test -run '^$' -bench . -count 3 -benchtime 5000x ./internal/dispatch
} | tee "$OUT/go-test-bench.raw.txt"

# Median of the three counts of each benchmark, per reported unit.
awk '
/^pkg: / { pkg = $2; sub(/.*\/internal\//, "", pkg) }
/^Benchmark/ {
	name = pkg "." $1
	if (!(name in seen)) { seen[name] = 1; order[++n] = name }
	for (i = 3; i < NF; i += 2) {
		key = name SUBSEP $(i + 1)
		vals[key] = vals[key] " " $i
		if (!((name, $(i + 1)) in unitseen)) { unitseen[name, $(i + 1)] = 1; units[name] = units[name] " " $(i + 1) }
	}
}
function median(s,   a, k, i, j, t) {
	k = split(s, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
END {
	for (x = 1; x <= n; x++) {
		name = order[x]; line = sprintf("%-60s", name)
		m = split(units[name], us, " ")
		for (u = 1; u <= m; u++) line = line sprintf("  %12s %s", median(vals[name, us[u]]), us[u])
		print line
	}
}' "$OUT/go-test-bench.raw.txt" | tee "$OUT/go-test-bench.txt"
echo "== load after: $(cat /proc/loadavg)"
