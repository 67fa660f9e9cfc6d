#!/usr/bin/env bash
# Notification benchmarks: fan-out to connected users, inbox API over a large
# table, emails per second. Each run starts a fresh hub, seeds its users with
# SQL, runs one relais-load scenario and prints its JSON result line.
#
#   load-tests/run-notify-bench.sh fanout [--backend sqlite|postgres] [notify-fanout options...]
#   load-tests/run-notify-bench.sh inbox  [inbox options...]            (PostgreSQL)
#   load-tests/run-notify-bench.sh email  [--backend sqlite|postgres] [email options...]
#   load-tests/run-notify-bench.sh all    (fanout on both backends, inbox, email at
#                                          RELAIS_EMAIL_CONCURRENCY 8 and 32)
#
# Users are inserted directly (with the admin's password hash, no argon2 per
# user) together with one session each, and relais-load mints their access
# tokens with the hub's RELAIS_JWT_SECRET, which this script sets. PostgreSQL
# databases are created as relais_bench_<mode>_<pid> and dropped on exit.
#
# Environment:
#   FANOUT_USERS      users connected by `fanout` (default 10000)
#   FANOUT_PRESEED    notifications already in each of those users' inboxes
#                     before the first trigger (default 0), with their counters
#   FANOUT_EXTRA_SQL  SQL run after seeding, before measuring (e.g. an index change)
#   INBOX_USERS       users seeded by `inbox` (default 1000)
#   INBOX_PER_USER    notifications per user (default 1000)
#   INBOX_HEAVY       notifications of the one heavy user (default 100000; 0: none)
#   INBOX_EXPLAIN=1   print EXPLAIN ANALYZE of the inbox queries (stderr)
#   INBOX_EXTRA_SQL   SQL run after seeding, before measuring (e.g. a candidate index)
#   EMAIL_USERS       recipients of `email` (default 5000)
#   RELAIS_EMAIL_CONCURRENCY, RELAIS_NOTIFY_BATCH   passed to the hub if set
#   BENCH_PG_URL      server URL without database (default postgres://postgres@127.0.0.1:5432)
#   SMTP_SINK         SMTP sink (default tests/smtp/sink.py), run with SINK_PYTHON
#                     (default /usr/bin/python3); its folder is under /dev/shm
#   SKIP_BUILD=1, RELAIS_BIN, RELAIS_LOAD_BIN, RELAIS_LOG (default warn),
#   RELAIS_MAX_CONNECTIONS (default 50000), BENCH_SERVER_LOG (default: temp dir)
set -euo pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
mode=$1
shift

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
# shellcheck source=load-tests/bench-lib.sh
source "$repo_root/load-tests/bench-lib.sh"

server_bin=${RELAIS_BIN:-target/release/relais}
load_bin=${RELAIS_LOAD_BIN:-target/release/relais-load}
pg_url=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
# No NOTICEs (e.g. "database ... does not exist, skipping") on stderr.
export PGOPTIONS='-c client_min_messages=warning'
sink_script=${SMTP_SINK:-tests/smtp/sink.py}
sink_python=${SINK_PYTHON:-/usr/bin/python3}

email=admin@example.com
password='load-test-Password-1234'
# The hub signs with this secret and relais-load mints with it.
RELAIS_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')
export RELAIS_JWT_SECRET

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/relais-notify-bench.XXXXXX")
server_pid=""
server_log=""
sink_pid=""
sink_dir=""
pg_dbs=()
url=""

stop_pid() {
    local pid=$1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_hub() {
    [[ -n "$server_pid" ]] || return 0
    stop_pid "$server_pid"
    server_pid=""
    # What the hub complained about, if anything.
    if [[ -n "$server_log" && -f "$server_log" ]]; then
        local problems
        problems=$(sed 's/\x1b\[[0-9;]*m//g' "$server_log" | grep -c -E ' (WARN|ERROR) ' || true)
        if [[ "${problems:-0}" != 0 ]]; then
            echo "server log: $problems WARN/ERROR lines, first ones:" >&2
            sed 's/\x1b\[[0-9;]*m//g' "$server_log" | grep -E ' (WARN|ERROR) ' | cut -c1-400 | head -n 5 >&2
        fi
    fi
}

stop_sink() {
    stop_pid "$sink_pid"
    sink_pid=""
    [[ -n "$sink_dir" ]] && rm -rf "$sink_dir"
    sink_dir=""
}

cleanup() {
    local status=$?
    stop_hub
    stop_sink
    if [[ $status -ne 0 && -n "$server_log" && -f "$server_log" ]]; then
        echo "--- last server log lines ($server_log) ---" >&2
        tail -n 30 "$server_log" >&2 || true
    fi
    for db in "${pg_dbs[@]}"; do
        psql "$pg_url/postgres" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2 || true
    done
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building release binaries..." >&2
    cargo build --release -p relais -p relais-load >&2
fi
# Every connection is a file descriptor for the hub and the generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ database

backend=sqlite
db_url=""      # DATABASE_URL of the current run ("" = the hub's SQLite file)
run_dir=""

# A fresh PostgreSQL database relais_bench_<name>_<pid>; sets db_url.
new_pg_db() {
    local db="relais_bench_$1_$$"
    psql "$pg_url/postgres" -X -q -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >&2
    pg_dbs+=("$db")
    db_url="$pg_url/$db"
}

# Runs the SQL on stdin against the current run's database.
db_sql() {
    if [[ $backend == postgres ]]; then
        psql "$db_url" -X -q -v ON_ERROR_STOP=1 "$@"
    else
        sqlite3 -bail -batch -cmd '.timeout 10000' "$run_dir/data/relais.db" "$@"
    fi
}

# db_scalar SQL: the single value SQL selects, unadorned.
db_scalar() {
    if [[ $backend == postgres ]]; then
        psql "$db_url" -X -q -v ON_ERROR_STOP=1 -At -c "$1"
    else
        sqlite3 -bail -batch -cmd '.timeout 10000' "$run_dir/data/relais.db" "$1"
    fi
}

# Prints `user_id<TAB>session_id` of the users whose id starts with $1.
export_users() {
    local sql="SELECT u.id, s.id FROM users u JOIN sessions s ON s.user_id = u.id
               WHERE u.id LIKE '$1%' ORDER BY u.id;"
    if [[ $backend == postgres ]]; then
        psql "$db_url" -X -q -v ON_ERROR_STOP=1 -At -F $'\t' -c "$sql"
    else
        sqlite3 -bail -batch -cmd '.timeout 10000' -separator $'\t' "$run_dir/data/relais.db" "$sql"
    fi
}

# seed_users COUNT ID_PREFIX SESSION_PREFIX EMAIL_PREFIX: COUNT members of
# the default tenant with ids ID_PREFIX<12 digits>, each with one session
# valid for 30 days, all with the admin's password hash.
seed_users() {
    local count=$1 id_prefix=$2 session_prefix=$3 email_prefix=$4
    local now_ms=$(($(date +%s) * 1000))
    local expires_ms=$((now_ms + 30 * 86400000))
    local series pad
    if [[ $backend == postgres ]]; then
        series="generate_series(1, $count) AS g(i)"
        pad="lpad(g.i::text, 12, '0')"
    else
        series="(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $count) SELECT i FROM s) AS g"
        pad="printf('%012d', g.i)"
    fi
    db_sql <<SQL
INSERT INTO users (id, tenant_id, email, display_name, password_hash, roles, created_at, updated_at)
SELECT '$id_prefix' || $pad, t.id, '$email_prefix' || g.i || '@example.com', 'Bench User ' || g.i,
       a.password_hash, 'member', $now_ms, $now_ms
FROM $series,
     (SELECT id FROM tenants WHERE slug = 'default') AS t,
     (SELECT password_hash FROM users WHERE email = '$email') AS a;
INSERT INTO sessions (id, tenant_id, user_id, created_at, expires_at)
SELECT '$session_prefix' || substr(u.id, length('$id_prefix') + 1), u.tenant_id, u.id,
       $now_ms, $expires_ms
FROM users u WHERE u.id LIKE '$id_prefix%';
SQL
    # Statistics as autovacuum would have them a minute later: without them
    # PostgreSQL plans the recipient pages for a handful of users.
    db_sql <<<"ANALYZE users; ANALYZE sessions;"
}

# preseed_inboxes PER_USER ID_PREFIX: PER_USER notifications in the inbox
# of every user whose id starts with ID_PREFIX, with their counters, as
# PER_USER earlier broadcasts would have left them (rows of all users
# interleaved by id; 20% unread, the rest read). The fan-out then writes
# into indexes of a realistic size instead of empty ones.
preseed_inboxes() {
    local per_user=$1 id_prefix=$2 started=$SECONDS
    local now_ms=$(($(date +%s) * 1000))
    local series
    if [[ $backend == postgres ]]; then
        series="generate_series(1, $per_user) AS g(i)"
    else
        series="(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $per_user) SELECT i FROM s) AS g"
    fi
    echo "seeding $per_user notifications per user..." >&2
    db_sql <<SQL
INSERT INTO notifications (tenant_id, user_id, trigger_id, type_key, category, priority, title, body,
                           url, payload, status, seen_at, read_at, created_at)
SELECT u.tenant_id, u.id, 'seed-' || g.i, 'system.announcement', 'system', 1,
       'Announcement ' || g.i,
       'Something happened to item ' || g.i || ' that you follow; open it to see the details.',
       '/items/' || g.i, '{"item":{"id":"' || g.i || '"}}',
       CASE WHEN g.i % 5 = 0 THEN 0 ELSE 1 END,
       CASE WHEN g.i % 5 = 0 THEN NULL ELSE $now_ms END,
       CASE WHEN g.i % 5 = 0 THEN NULL ELSE $now_ms END,
       $now_ms - ($per_user - g.i) * 60000
FROM $series CROSS JOIN users u
WHERE u.id LIKE '$id_prefix%'
ORDER BY g.i, u.id;
INSERT INTO notification_counts (tenant_id, user_id, category, unread, read, archived, unseen, version)
SELECT tenant_id, user_id, category,
       SUM(CASE WHEN status = 0 THEN 1 ELSE 0 END), SUM(CASE WHEN status = 1 THEN 1 ELSE 0 END), 0,
       SUM(CASE WHEN status = 0 THEN 1 ELSE 0 END), COUNT(*)
FROM notifications WHERE user_id LIKE '$id_prefix%'
GROUP BY tenant_id, user_id, category;
SQL
    if [[ $backend == postgres ]]; then
        db_sql <<<"VACUUM (ANALYZE) notifications; VACUUM (ANALYZE) notification_counts; CHECKPOINT;"
    else
        db_sql <<<"ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    fi
    echo "seeded $(db_scalar "SELECT COUNT(*) FROM notifications") notifications in $((SECONDS - started))s" >&2
}

# ------------------------------------------------------------------ the hub

# start_hub [VAR=value...]: a fresh hub on a free port with the current
# run's database; sets url, server_pid, server_log.
start_hub() {
    local port
    port=$(free_port)
    url="http://127.0.0.1:$port"
    server_log=${BENCH_SERVER_LOG:-$run_dir/server.log}
    local env=(
        RELAIS_BIND="127.0.0.1:$port"
        RELAIS_DATA_DIR="$run_dir/data"
        RELAIS_BOOTSTRAP_ADMIN_EMAIL="$email"
        RELAIS_BOOTSTRAP_ADMIN_PASSWORD="$password"
        RELAIS_MAX_CONNECTIONS="${RELAIS_MAX_CONNECTIONS:-50000}"
        RELAIS_LOG="${RELAIS_LOG:-warn}"
    )
    [[ -n "$db_url" ]] && env+=(DATABASE_URL="$db_url")
    [[ -n "${RELAIS_EMAIL_CONCURRENCY:-}" ]] && env+=(RELAIS_EMAIL_CONCURRENCY="$RELAIS_EMAIL_CONCURRENCY")
    [[ -n "${RELAIS_NOTIFY_BATCH:-}" ]] && env+=(RELAIS_NOTIFY_BATCH="$RELAIS_NOTIFY_BATCH")
    echo "starting $server_bin on $url ($backend; data in $run_dir/data)" >&2
    env "${env[@]}" "$@" "$server_bin" serve >"$server_log" 2>&1 </dev/null &
    server_pid=$!
    wait_ready server "$url" "$server_pid"
}

# new_run NAME BACKEND: a fresh run folder (and database on PostgreSQL).
new_run() {
    backend=$2
    run_dir="$work_dir/$1-$backend"
    mkdir -p "$run_dir"
    db_url=""
    case $backend in
        sqlite) ;;
        postgres) new_pg_db "$1" ;;
        *) echo "unknown backend $backend (sqlite or postgres)" >&2; return 2 ;;
    esac
}

load() {
    "$load_bin" "$@" --url "$url" --email "$email" --password "$password" --server-pid "$server_pid"
}

# ------------------------------------------------------------------ fanout

run_fanout() {
    local users=${FANOUT_USERS:-10000}
    new_run fanout "$1"
    shift
    start_hub
    echo "seeding $users users..." >&2
    seed_users "$users" 00000000-0000-4000-8000- 00000000-0000-4000-9000- bench-
    export_users 00000000-0000-4000-8000- >"$run_dir/users.tsv"
    local preseed=${FANOUT_PRESEED:-0}
    if [[ $preseed -gt 0 ]]; then
        preseed_inboxes "$preseed" 00000000-0000-4000-8000-
    fi
    if [[ -n "${FANOUT_EXTRA_SQL:-}" ]]; then
        echo "running FANOUT_EXTRA_SQL: $FANOUT_EXTRA_SQL" >&2
        db_sql <<<"$FANOUT_EXTRA_SQL;"
    fi
    local status=0
    load notify-fanout --users-file "$run_dir/users.tsv" "$@" || status=$?
    stop_hub
    return "$status"
}

# ------------------------------------------------------------------ inbox

# Twenty notification kinds (type, category, priority as the catalog has
# them), picked per row by a hash: 8 categories, 20% high, 5% critical.
inbox_types_sql="
CREATE TEMP TABLE bench_types (k int PRIMARY KEY, type_key text, category text, priority bigint, title text);
INSERT INTO bench_types VALUES
 (0, 'campaign.approved', 'campaigns', 1, 'Campaign approved'),
 (1, 'campaign.submitted', 'campaigns', 1, 'Campaign submitted for review'),
 (2, 'campaign.rejected', 'campaigns', 2, 'Campaign rejected'),
 (3, 'spot.scheduled', 'diffusion', 1, 'Spot scheduled'),
 (4, 'slot.cancelled', 'diffusion', 2, 'Slot cancelled'),
 (5, 'spot.aired', 'diffusion', 0, 'Spot aired'),
 (6, 'moderation.item_pending', 'moderation', 1, 'Item waiting for moderation'),
 (7, 'moderation.item_rejected', 'moderation', 2, 'Item rejected'),
 (8, 'project.status_changed', 'projects', 1, 'Project status changed'),
 (9, 'project.member_added', 'projects', 1, 'Added to a project'),
 (10, 'project.task_changed', 'projects', 0, 'Task updated'),
 (11, 'task.assigned', 'tasks', 1, 'Task assigned to you'),
 (12, 'task.due_soon', 'tasks', 1, 'Task due soon'),
 (13, 'task.overdue', 'tasks', 2, 'Task overdue'),
 (14, 'document.commented', 'documents', 1, 'New comment on a document'),
 (15, 'document.uploaded', 'documents', 0, 'Document uploaded'),
 (16, 'chat.mention', 'chat', 1, 'You were mentioned'),
 (17, 'chat.direct_message', 'chat', 1, 'New direct message'),
 (18, 'system.announcement', 'system', 1, 'Announcement'),
 (19, 'system.maintenance', 'system', 3, 'Planned maintenance');
"

run_inbox() {
    local users=${INBOX_USERS:-1000} per_user=${INBOX_PER_USER:-1000} heavy=${INBOX_HEAVY:-100000}
    new_run inbox postgres
    start_hub
    echo "seeding $users users × $per_user notifications and one user with $heavy..." >&2
    seed_users "$users" 00000000-0000-4000-8000- 00000000-0000-4000-9000- bench-
    export_users 00000000-0000-4000-8000- >"$run_dir/users.tsv"
    local heavy_args=()
    if [[ $heavy -gt 0 ]]; then
        seed_users 1 00000000-0000-4000-a000- 00000000-0000-4000-b000- heavy-
        export_users 00000000-0000-4000-a000- >"$run_dir/heavy.tsv"
        heavy_args=(--heavy-users-file "$run_dir/heavy.tsv")
    fi
    local now_ms=$(($(date +%s) * 1000)) started=$SECONDS
    # Spread over the last 100 days; rows of all users interleave by time
    # (so by id) as they would in a live table. Status: 20% unread (half of
    # them seen), 65% read, 15% archived. One trigger per step n, as a
    # broadcast would create.
    db_sql <<SQL
$inbox_types_sql
WITH rows AS (
    SELECT u.id AS user_id, u.tenant_id, g.n, 'seed-' || g.n AS trigger_id,
           $now_ms - ($per_user - g.n)::bigint * (8640000000 / $per_user)
                   - abs(hashint8(g.n::bigint * 7919 + hashtext(u.id))) % (8640000000 / $per_user) AS created_at,
           abs(hashint8(g.n::bigint * 1000003 + hashtext(u.id))) AS h
    FROM users u CROSS JOIN generate_series(1, $per_user) AS g(n)
    WHERE u.id LIKE '00000000-0000-4000-8000-%'
    UNION ALL
    SELECT u.id, u.tenant_id, g.n, 'seed-heavy-' || g.n,
           $now_ms - ($heavy - g.n)::bigint * (8640000000 / greatest($heavy, 1)),
           abs(hashint8(g.n::bigint * 1000003 + hashtext(u.id)))
    FROM users u CROSS JOIN generate_series(1, $heavy) AS g(n)
    WHERE u.id LIKE '00000000-0000-4000-a000-%'
)
INSERT INTO notifications (tenant_id, user_id, trigger_id, type_key, category, priority, title, body,
                           url, payload, status, seen_at, read_at, archived_at, created_at)
SELECT r.tenant_id, r.user_id, r.trigger_id, t.type_key, t.category, t.priority,
       t.title || ': item ' || r.n,
       'Something happened to item ' || r.n || ' in ' || t.category
           || ' that you follow; open it to see the details and what changed since your last visit.',
       '/items/' || r.n,
       '{"item":{"id":"' || r.n || '","title":"Item ' || r.n || '"},"actor":{"name":"Bench Actor"},"category":"'
           || t.category || '"}',
       CASE WHEN s.p < 20 THEN 0 WHEN s.p < 85 THEN 1 ELSE 2 END,
       CASE WHEN s.p < 10 THEN NULL ELSE r.created_at + 60000 END,
       CASE WHEN s.p < 20 THEN NULL ELSE r.created_at + 3600000 END,
       CASE WHEN s.p < 85 THEN NULL ELSE r.created_at + 172800000 END,
       r.created_at
FROM rows r
CROSS JOIN LATERAL (SELECT (r.h / 20) % 100 AS p) s
JOIN bench_types t ON t.k = r.h % 20
ORDER BY r.created_at;

INSERT INTO notification_counts (tenant_id, user_id, category, unread, read, archived, unseen, version)
SELECT tenant_id, user_id, category,
       count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status = 1),
       count(*) FILTER (WHERE status = 2), count(*) FILTER (WHERE status < 2 AND seen_at IS NULL),
       count(*)
FROM notifications
GROUP BY tenant_id, user_id, category;
VACUUM (ANALYZE) notifications;
VACUUM (ANALYZE) notification_counts;
ANALYZE;
-- Flush the seeding's dirty pages now rather than in a checkpoint that
-- would land in the middle of the measurement.
CHECKPOINT;
SQL
    if [[ -n "${INBOX_EXTRA_SQL:-}" ]]; then
        echo "running INBOX_EXTRA_SQL: $INBOX_EXTRA_SQL" >&2
        db_sql <<<"$INBOX_EXTRA_SQL; ANALYZE notifications; CHECKPOINT;"
    fi
    echo "seeded in $((SECONDS - started))s:" >&2
    db_sql -c "SELECT count(*) AS notifications, count(DISTINCT user_id) AS users,
                      pg_size_pretty(pg_total_relation_size('notifications')) AS size
               FROM notifications" >&2
    if [[ "${INBOX_EXPLAIN:-0}" == 1 ]]; then
        inbox_explain 00000000-0000-4000-8000-000000000001
        [[ $heavy -gt 0 ]] && inbox_explain 00000000-0000-4000-a000-000000000001
    fi
    local status=0
    load inbox --users-file "$run_dir/users.tsv" "${heavy_args[@]}" "$@" || status=$?
    stop_hub
    return "$status"
}

# EXPLAIN ANALYZE of the hub's inbox queries for one user, prepared with
# the same placeholders as src/notify/inbox.rs and counts.rs build them, once
# as custom plans and once as generic plans: the hub's driver prepares each
# statement once per connection, and PostgreSQL switches a prepared
# statement to its generic plan after five executions unless that looks
# costlier.
inbox_explain() {
    local user=$1 mode
    local cols="id, type_key, category, priority, title, body, url, payload, status, seen_at, read_at, archived_at, created_at"
    local from="FROM notifications WHERE tenant_id = \$1 AND user_id = \$2"
    # The hub's default list: the unread and the read range, merged (inbox::page_sql).
    active() {
        echo "SELECT $cols FROM (SELECT * FROM (SELECT $cols $from AND status = 0$1 ORDER BY id DESC LIMIT 21) unread" \
             "UNION ALL SELECT * FROM (SELECT $cols $from AND status = 1$1 ORDER BY id DESC LIMIT 21) read_items) inbox ORDER BY id DESC LIMIT 21"
    }
    for mode in custom generic; do
        echo "--- EXPLAIN ANALYZE for $user, $mode plans ---" >&2
        db_sql >&2 <<SQL
\\pset pager off
SET plan_cache_mode = force_${mode}_plan;
SELECT id AS tenant FROM tenants WHERE slug = 'default' \\gset
SELECT id AS cursor FROM notifications WHERE user_id = '$user' AND status < 2 ORDER BY id DESC OFFSET 19 LIMIT 1 \\gset
PREPARE list(text, text) AS $(active "");
PREPARE unread(text, text, bigint) AS SELECT $cols $from AND status = \$3 ORDER BY id DESC LIMIT 21;
PREPARE category(text, text, text) AS $(active " AND category = \$3");
PREPARE priority(text, text, bigint, bigint) AS $(active " AND priority IN (\$3, \$4)");
PREPARE page2(text, text, bigint) AS $(active " AND id < \$3");
PREPARE counts(text, text) AS SELECT user_id, category, unread, read, archived, unseen, version FROM notification_counts WHERE tenant_id = \$1 AND user_id = \$2;
\\echo '== list'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE list(:'tenant', '$user');
\\echo '== unread'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE unread(:'tenant', '$user', 0);
\\echo '== category'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE category(:'tenant', '$user', 'projects');
\\echo '== priority'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE priority(:'tenant', '$user', 2, 3);
\\echo '== page2'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE page2(:'tenant', '$user', :cursor);
\\echo '== counts'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE counts(:'tenant', '$user');
SQL
    done
}

# ------------------------------------------------------------------ email

run_email() {
    local users=${EMAIL_USERS:-5000}
    new_run "email${RELAIS_EMAIL_CONCURRENCY:-}" "$1"
    shift
    sink_dir=$(mktemp -d /dev/shm/relais-bench-mail.XXXXXX)
    local sink_out="$run_dir/sink.out"
    # The sink prints `ready <port>` once listening.
    "$sink_python" "$sink_script" --port 0 --maildir "$sink_dir" \
        </dev/null >"$sink_out" 2>"$run_dir/sink.err" &
    sink_pid=$!
    local port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$sink_out")
        [[ -n "$port" ]] && break
        kill -0 "$sink_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$port" ]]; then
        echo "SMTP sink did not start:" >&2
        cat "$run_dir/sink.err" >&2
        return 1
    fi
    echo "SMTP sink on 127.0.0.1:$port (pid $sink_pid, folder $sink_dir)" >&2
    start_hub RELAIS_SMTP_HOST=127.0.0.1 RELAIS_SMTP_PORT="$port" RELAIS_SMTP_TLS=none
    echo "seeding $users users..." >&2
    seed_users "$users" 00000000-0000-4000-8000- 00000000-0000-4000-9000- bench-
    local status=0
    load email --maildir "$sink_dir" --sink-pid "$sink_pid" "$@" || status=$?
    # Every message reached the sink; any email still pending was sent but
    # not recorded, and will be sent again once its lease lapses.
    local pending
    pending=$(db_scalar "SELECT count(*) FROM emails WHERE status = 'pending';")
    if [[ "${pending:-0}" != 0 ]]; then
        echo "$pending emails still pending after the run; waiting up to 150s for them" >&2
        for _ in $(seq 1 150); do
            pending=$(db_scalar "SELECT count(*) FROM emails WHERE status = 'pending';")
            [[ "${pending:-0}" == 0 ]] && break
            sleep 1
        done
        echo "messages in the sink now: $(find "$sink_dir" -name '*.eml' | wc -l)" >&2
    fi
    echo "outbox (status, emails, attempts):" >&2
    db_sql <<<"SELECT status, count(*), sum(attempts) FROM emails GROUP BY status;" >&2 || true
    stop_hub
    stop_sink
    return "$status"
}

# ------------------------------------------------------------------ main

backend_arg() {
    if [[ "${1:-}" == --backend ]]; then
        echo "$2"
    else
        echo sqlite
    fi
}

case $mode in
    fanout | email)
        backend=$(backend_arg "$@")
        [[ "${1:-}" == --backend ]] && shift 2
        "run_$mode" "$backend" "$@"
        ;;
    inbox)
        run_inbox "$@"
        ;;
    all)
        run_fanout sqlite
        run_fanout postgres
        run_inbox
        RELAIS_EMAIL_CONCURRENCY=8 run_email sqlite
        RELAIS_EMAIL_CONCURRENCY=32 run_email sqlite
        ;;
    *) usage ;;
esac
