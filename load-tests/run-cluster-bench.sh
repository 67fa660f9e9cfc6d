#!/usr/bin/env bash
# Fan-out benchmark of Relais in cluster mode: two hub processes sharing one
# SQLite file and one Redis, subscribers split over both, publications sent
# to node 1, so half the subscribers receive across nodes.
#
#   load-tests/run-cluster-bench.sh [relais-load fanout options...]
#   load-tests/run-cluster-bench.sh --subscribers 5000 --rate 20 --duration-secs 30
#
# Builds the release binaries, starts node 1 on a free loopback port and
# waits for its /readyz (so the bootstrap admin is created once), then node
# 2, then runs
#   relais-load fanout --url <node1> --subscribe-urls <node1>,<node2> ...
# and prints two JSON lines on stdout: the fan-out result (with "per_node")
# and {"redis":{...}}, Redis's CPU time and commands per publication while
# publishing (plus the same over the whole run under "run"). Both nodes are
# stopped on exit (also on failure or Ctrl-C), the temp dir removed and the
# run's Redis keys deleted.
#
# Environment overrides:
#   BENCH_SCENARIO          fanout (default) or chat (relais-load chat options then)
#   BENCH_REDIS_URL         Redis both nodes share (default redis://127.0.0.1:6379)
#   RELAIS_BIN              server binary (default: target/release/relais)
#   RELAIS_LOAD_BIN         load generator (default: target/release/relais-load)
#   SKIP_BUILD=1            do not run cargo build
#   RELAIS_LOG              server log filter (default: warn)
#   RELAIS_MAX_CONNECTIONS  connection cap per node (default: 50000)
#   BENCH_SERVER_LOG_DIR    where node1.log / node2.log go
#                           (default: the temp dir; last lines shown on failure)
set -euo pipefail

# --- Redis probes (also run by relais-load's --exec-*-publish hooks) -------

# Prints utime+stime (clock ticks, all threads) of process $1.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # Fields after "pid (comm) ": state is $1, utime $12, stime $13.
    awk '{ print $12 + $13 }' <<<"${stat##*) }"
}

# Records wall time, Redis CPU ticks and INFO commandstats as
# $BENCH_SNAP_DIR/<name>.{time,cpu,stats}.
snapshot() {
    local name=$1 dir=$BENCH_SNAP_DIR
    date +%s.%N >"$dir/$name.time"
    if [[ -n "${BENCH_SNAP_REDIS_PID:-}" ]]; then
        cpu_ticks "$BENCH_SNAP_REDIS_PID" >"$dir/$name.cpu" || rm -f "$dir/$name.cpu"
    fi
    redis-cli -u "$BENCH_SNAP_REDIS_URL" INFO commandstats >"$dir/$name.stats" 2>/dev/null ||
        rm -f "$dir/$name.stats"
}

if [[ "${1:-}" == __snapshot ]]; then
    snapshot "$2"
    exit 0
fi

# --- setup --------------------------------------------------------------------

self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

server_bin=${RELAIS_BIN:-target/release/relais}
load_bin=${RELAIS_LOAD_BIN:-target/release/relais-load}
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}

# shellcheck source=load-tests/bench-lib.sh
source "$repo_root/load-tests/bench-lib.sh"
check_cluster_prerequisites "$redis_url" "$self"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building release binaries..." >&2
    cargo build --release -p relais -p relais-load >&2
fi

email=admin@example.com
password='load-test-Password-1234'
prefix="bench-$(random_hex 6)"
jwt_secret="bench-jwt-$(random_hex 24)"

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/relais-cluster-bench.XXXXXX")
log_dir=${BENCH_SERVER_LOG_DIR:-$work_dir}
mkdir -p "$log_dir"
pids=()
load_pid=""

stop_node() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # A few seconds for a graceful shutdown, then force it.
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    local pid
    # Interrupted mid-run: stop the generator first (its workers stop by
    # themselves when it goes away).
    if [[ -n "$load_pid" ]] && kill -0 "$load_pid" 2>/dev/null; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        stop_node "$pid"
    done
    if [[ $status -ne 0 ]]; then
        show_node_logs "$log_dir" 1 2
    fi
    delete_redis_keys "$redis_url" "$prefix"
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port1=$(free_port)
port2=$(free_port)
while [[ "$port2" == "$port1" ]]; do port2=$(free_port); done
url1="http://127.0.0.1:$port1"
url2="http://127.0.0.1:$port2"

# Every connection is a file descriptor for the servers too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# start_node N PORT: starts node N; its pid goes to pids.
start_node() {
    start_cluster_node "$1" "$2" "$work_dir" "$log_dir/node$1.log" "$server_bin" \
        "$redis_url" "$prefix" "$jwt_secret" "$email" "$password"
    pids+=("$(cat "$work_dir/node$1.pid")")
}

start_node 1 "$port1"
wait_ready 1 "$url1" "${pids[0]}"
start_node 2 "$port2"
wait_ready 2 "$url2" "${pids[1]}"

# The Redis server's pid, to read its CPU time: the one behind the URL if it
# runs on this machine, else the only local redis-server.
redis_pid=$(redis-cli -u "$redis_url" INFO server 2>/dev/null | tr -d '\r' |
    sed -n 's/^process_id://p')
if [[ -z "$redis_pid" || "$(cat "/proc/$redis_pid/comm" 2>/dev/null)" != redis-server* ]]; then
    candidates=$(pgrep -x redis-server || true)
    if [[ -n "$candidates" && $(wc -l <<<"$candidates") -eq 1 ]]; then
        redis_pid=$candidates
    else
        echo "cannot tell which local process is the Redis server; no CPU figures" >&2
        redis_pid=""
    fi
fi

export BENCH_SNAP_DIR="$work_dir" BENCH_SNAP_REDIS_URL="$redis_url" BENCH_SNAP_REDIS_PID="$redis_pid"

# --- the run ------------------------------------------------------------------

snapshot run-start
# BENCH_SCENARIO=chat: the chat scenario with its users' WebSockets split
# over both nodes (REST setup on node 1); prints its result line only.
if [[ "${BENCH_SCENARIO:-fanout}" == chat ]]; then
    "$load_bin" chat \
        --url "$url1" --node-urls "$url1,$url2" \
        --email "$email" --password "$password" --server-pid "${pids[0]}" \
        "$@" >"$work_dir/result.json" </dev/null &
    load_pid=$!
    status=0
    wait "$load_pid" || status=$?
    load_pid=""
    cat "$work_dir/result.json"
    exit "$status"
fi
# In the background and waited for, so a TERM/INT to this script runs the
# trap at once (a foreground child would be waited for first).
"$load_bin" fanout \
    --url "$url1" --subscribe-urls "$url1,$url2" \
    --email "$email" --password "$password" --server-pid "${pids[0]}" \
    --exec-before-publish "'$self' __snapshot publish-start" \
    --exec-after-publish "'$self' __snapshot publish-end" \
    "$@" >"$work_dir/result.json" </dev/null &
load_pid=$!
status=0
wait "$load_pid" || status=$?
load_pid=""
snapshot run-end
result=$(cat "$work_dir/result.json")
printf '%s\n' "$result"

# --- Redis figures --------------------------------------------------------------

published=$(sed -n 's/.*"published":\([0-9][0-9]*\).*/\1/p' <<<"$result")
published=${published:-0}
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# window_json FROM TO: the JSON members describing Redis between two
# snapshots (without braces). Our own INFO probes are left out.
window_json() {
    local from=$1 to=$2
    awk -v published="$published" -v tck="$clk_tck" \
        -v t0="$(cat "$work_dir/$from.time")" -v t1="$(cat "$work_dir/$to.time")" \
        -v c0="$(cat "$work_dir/$from.cpu" 2>/dev/null)" -v c1="$(cat "$work_dir/$to.cpu" 2>/dev/null)" '
        function calls(line,    n, parts, i, kv) {
            n = split(line, parts, ",")
            for (i = 1; i <= n; i++) {
                split(parts[i], kv, "=")
                if (kv[1] == "calls") return kv[2] + 0
            }
            return 0
        }
        {
            sub(/\r$/, "")
            if ($0 !~ /^cmdstat_/) next
            colon = index($0, ":")
            name = substr($0, 9, colon - 9)
            if (FILENAME == ARGV[1]) before[name] = calls(substr($0, colon + 1))
            else after[name] = calls(substr($0, colon + 1))
        }
        END {
            secs = t1 - t0
            printf "\"window_secs\":%.3f", secs
            if (c0 != "" && c1 != "") {
                cpu = (c1 - c0) / tck
                printf ",\"cpu_secs\":%.2f,\"cpu_pct_of_core\":%.1f", cpu, (secs > 0 ? 100 * cpu / secs : 0)
            } else {
                printf ",\"cpu_secs\":null,\"cpu_pct_of_core\":null"
            }
            # Commands with calls in the window, most called first; evalsha,
            # eval and publish always appear.
            total = 0; k = 0
            for (name in after) {
                d = after[name] - before[name]
                if (name == "info" || d <= 0) continue
                total += d; seen[name] = 1
                k++; names[k] = name; deltas[k] = d
            }
            split("evalsha eval publish", wanted, " ")
            for (i = 1; i <= 3; i++)
                if (!(wanted[i] in seen)) { k++; names[k] = wanted[i]; deltas[k] = 0 }
            for (i = 2; i <= k; i++)
                for (j = i; j > 1 && deltas[j] > deltas[j - 1]; j--) {
                    t = deltas[j]; deltas[j] = deltas[j - 1]; deltas[j - 1] = t
                    t = names[j]; names[j] = names[j - 1]; names[j - 1] = t
                }
            out = ""
            for (i = 1; i <= k; i++)
                out = out sprintf("%s\"%s\":%d", i == 1 ? "" : ",", names[i], deltas[i])
            printf ",\"publications\":%d,\"commands\":%d", published, total
            if (published > 0) printf ",\"commands_per_publication\":%.2f", total / published
            else printf ",\"commands_per_publication\":null"
            printf ",\"by_command\":{%s}", out
        }' "$work_dir/$from.stats" "$work_dir/$to.stats"
}

have() { [[ -s "$work_dir/$1.stats" && -s "$work_dir/$2.stats" ]]; }
if have run-start run-end; then
    run_json=$(window_json run-start run-end)
    if have publish-start publish-end; then
        printf '{"redis":{"pid":%s,"window":"publish",%s,"run":{%s}}}\n' \
            "${redis_pid:-null}" "$(window_json publish-start publish-end)" "$run_json"
    else
        printf '{"redis":{"pid":%s,"window":"run",%s}}\n' "${redis_pid:-null}" "$run_json"
    fi
else
    echo '{"redis":{"error":"INFO commandstats unavailable"}}'
fi
exit "$status"
