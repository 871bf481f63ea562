#!/usr/bin/env bash
# Enqueue→delivery latency at 1,000 tasks/s while the maintenance leader
# prunes a backlog of expired finished tasks (issue 13), on PostgreSQL.
#
#   bench/prune-latency.sh ADMIN_URL SPOOL_BINARY ROWS [RATE_TASKS]
#
# ADMIN_URL is a PostgreSQL URL allowed to CREATE DATABASE (e.g. a
# throwaway cluster like internal/testpg's: fsync and synchronous commit
# off). The script creates a database, migrates it with SPOOL_BINARY,
# inserts ROWS finished tasks that finished 8 days ago (past the default
# 7-day retention) with generate_series, starts `spool serve` (whose
# leader starts pruning at its first tick), runs `spool bench --rate 1000`
# for RATE_TASKS tasks (default 20000: 20 s) and prints bench's JSON plus
# how many expired tasks were left when it ended. ROWS=0 is the baseline.
set -euo pipefail
admin=$1 bin=$2 rows=$3 tasks=${4:-20000}
db=spool_prune_$$
url=${admin%/*}/$db
psql -q "$admin" -c "CREATE DATABASE $db"
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null; psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
SPOOL_DATABASE_URL=$url "$bin" migrate >/dev/null 2>&1
psql -q "$url" <<SQL
INSERT INTO spool_queues (name, max_attempts, timeout_ms) VALUES ('history', 25, 30000);
INSERT INTO spool_tasks (id, queue, state, priority, run_at, attempt, max_attempts,
        timeout_ms, target_url, target_method, payload, content_type, created_at, updated_at, finished_at)
    SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7000' || '8000'
            || lpad(to_hex(i), 12, '0'))::uuid,
        'history', CASE i % 1000 WHEN 0 THEN 'failed' ELSE 'succeeded' END,
        5, at, 1, 25, 30000, 'http://127.0.0.1:9/hook', 'POST', '{"n":1}'::bytea, 'application/json', at, at, at
    FROM generate_series(1, $rows) AS i,
        LATERAL (SELECT now() - interval '8 days' + i * interval '1 ms' AS at) a;
DO \$\$ BEGIN
    IF to_regclass('spool_task_counts') IS NOT NULL THEN
        INSERT INTO spool_task_counts (queue, state, n)
            SELECT queue, state, count(*) FROM spool_tasks WHERE state IN ('succeeded', 'failed', 'cancelled')
            GROUP BY queue, state;
    END IF;
END \$\$;
VACUUM ANALYZE spool_tasks;
SQL
SPOOL_DATABASE_URL=$url SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8 SPOOL_HTTP_ADDR=127.0.0.1:18000 \
    SPOOL_ADMIN_ADDR=127.0.0.1:19090 "$bin" serve >/tmp/spool_prune_$$.log 2>&1 &
serve=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:19090/readyz >/dev/null && break; sleep 0.1; done
sleep 2 # the leader is elected and its first tick starts pruning
"$bin" bench --server http://127.0.0.1:18000 --tasks "$tasks" --rate 1000 --concurrency 20 --output json --no-progress
echo "expired tasks left: $(psql -tA "$url" -c "SELECT count(*) FROM spool_tasks WHERE finished_at < now() - interval '7 days'")"
