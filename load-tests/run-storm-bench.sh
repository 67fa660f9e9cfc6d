#!/usr/bin/env bash
# Reconnection storm benchmark of Relais in cluster mode: two hub processes
# sharing one SQLite file and one Redis; the clients hold WebSockets on node
# A, publications go through node B's REST API. After a warm-up node A is
# restarted and every client reconnects to it with `recover`, at a random
# moment within --spread-secs (default 5) of seeing its socket close.
#
#   load-tests/run-storm-bench.sh [relais-load storm options...]
#   load-tests/run-storm-bench.sh --clients 19000 --spread-secs 5 --rate 20
#
# Builds the release binaries, starts node A on a free loopback port and
# waits for its /readyz (so the bootstrap admin is created once), then node
# B, then runs
#   relais-load storm --url <A> --publish-url <B> --server-pid <A's pid>
#       --exec-restart '<this script> __restart' ...
# and prints its JSON line on stdout, with "restart_signal" and
# "restart_pause_secs" added. The restart hook stops node A with
# BENCH_RESTART_SIGNAL (TERM: graceful, clients get close 4007 and the node
# drains them before exiting; KILL: the sockets just drop), waits for the
# process to be gone, sleeps BENCH_RESTART_PAUSE_SECS, starts node A again
# on the same port with the same environment, waits for its /readyz and
# prints the new PID. Both nodes are stopped on exit (also on failure or
# Ctrl-C), the temp dir removed and the run's Redis keys deleted.
#
# Environment overrides:
#   BENCH_RESTART_SIGNAL      TERM (default) or KILL
#   BENCH_RESTART_PAUSE_SECS  extra downtime before node A starts again (default 0)
#   RELAIS_CHANNEL_HISTORY    history window (default broadcast=5000/3600,
#                             so the whole outage can be recovered)
#   BENCH_REDIS_URL           Redis both nodes share (default redis://127.0.0.1:6379)
#   RELAIS_BIN                server binary (default: target/release/relais)
#   RELAIS_LOAD_BIN           load generator (default: target/release/relais-load)
#   SKIP_BUILD=1              do not run cargo build
#   RELAIS_LOG                server log filter (default: warn)
#   RELAIS_MAX_CONNECTIONS    connection cap per node (default: 50000)
#   BENCH_SERVER_LOG_DIR      where nodeA.log / nodeB.log go
#                             (default: the temp dir; last lines shown on failure)
# Other RELAIS_* variables (e.g. RELAIS_SHUTDOWN_GRACE_SECS) reach both nodes.
set -euo pipefail

# --- node control (shared by the run and the restart hook) --------------------

# shellcheck source=load-tests/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# start_node NAME PORT: starts node NAME with the run's environment
# (STORM_* variables; see start_cluster_node).
start_node() {
    start_cluster_node "$1" "$2" "$STORM_WORK_DIR" "$STORM_LOG_DIR/node$1.log" \
        "$STORM_SERVER_BIN" "$STORM_REDIS_URL" "$STORM_PREFIX" "$STORM_JWT_SECRET" \
        "$STORM_EMAIL" "$STORM_PASSWORD"
}

# The restart hook, run by relais-load (`sh -c`), with the run's STORM_*
# environment: stop node A, start it again, print its new pid on stdout.
if [[ "${1:-}" == __restart ]]; then
    old=$(cat "$STORM_WORK_DIR/nodeA.pid")
    signal=${BENCH_RESTART_SIGNAL:-TERM}
    echo "restart: sending SIG$signal to node A (pid $old)" >&2
    kill "-$signal" "$old" 2>/dev/null || true
    # A graceful shutdown drains for up to RELAIS_SHUTDOWN_GRACE_SECS (10)
    # plus 5 s for HTTP requests; force it after 30 s.
    for i in $(seq 1 600); do
        alive "$old" || break
        if [[ $i -eq 600 ]]; then
            echo "restart: node A still running after 30s; killing it" >&2
            kill -KILL "$old" 2>/dev/null || true
        fi
        sleep 0.05
    done
    while alive "$old"; do sleep 0.05; done
    echo "restart: node A (pid $old) is gone" >&2
    pause=${BENCH_RESTART_PAUSE_SECS:-0}
    if [[ "$pause" != 0 ]]; then
        sleep "$pause"
    fi
    # After SIGKILL the dead node's sockets linger in FIN_WAIT for a while
    # and the port cannot be bound yet (SO_REUSEADDR only covers
    # TIME_WAIT): start again, as a supervisor would, for up to 30 s.
    for attempt in $(seq 1 150); do
        start_node A "$STORM_PORT_A"
        new=$(cat "$STORM_WORK_DIR/nodeA.pid")
        if wait_ready A "http://127.0.0.1:$STORM_PORT_A" "$new"; then
            echo "$new"
            exit 0
        fi
        alive "$new" && exit 1
        tail -n 1 "$STORM_LOG_DIR/nodeA.log" | grep -q 'Address already in use' || exit 1
        echo "restart: port $STORM_PORT_A still in use (attempt $attempt); retrying" >&2
        sleep 0.2
    done
    exit 1
fi

# --- setup --------------------------------------------------------------------

self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

server_bin=${RELAIS_BIN:-target/release/relais}
load_bin=${RELAIS_LOAD_BIN:-target/release/relais-load}
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
case "${BENCH_RESTART_SIGNAL:-TERM}" in
TERM | KILL) ;;
*)
    echo "BENCH_RESTART_SIGNAL must be TERM or KILL" >&2
    exit 1
    ;;
esac

check_cluster_prerequisites "$redis_url" "$self"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building release binaries..." >&2
    cargo build --release -p relais -p relais-load >&2
fi
server_bin=$(cd "$(dirname "$server_bin")" && pwd)/$(basename "$server_bin")


work_dir=$(mktemp -d "${TMPDIR:-/tmp}/relais-storm-bench.XXXXXX")
log_dir=${BENCH_SERVER_LOG_DIR:-$work_dir}
mkdir -p "$log_dir"
log_dir=$(cd "$log_dir" && pwd)
load_pid=""

# Everything the restart hook needs to start node A again the same way.
export STORM_WORK_DIR="$work_dir" STORM_LOG_DIR="$log_dir" STORM_SERVER_BIN="$server_bin"
export STORM_REDIS_URL="$redis_url" STORM_PREFIX="bench-$(random_hex 6)"
export STORM_JWT_SECRET="bench-jwt-$(random_hex 24)"
export STORM_EMAIL=admin@example.com STORM_PASSWORD='load-test-Password-1234'
export RELAIS_CHANNEL_HISTORY="${RELAIS_CHANNEL_HISTORY:-broadcast=5000/3600}"

stop_node() {
    local pid=$1
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # A few seconds for a graceful shutdown, then force it.
    for _ in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    local name pid
    # Interrupted mid-run: stop the generator first (it kills a running
    # restart hook when it goes).
    if [[ -n "$load_pid" ]] && kill -0 "$load_pid" 2>/dev/null; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    # Node A's pid file names the current process (the hook rewrites it).
    for name in A B; do
        pid=$(cat "$work_dir/node$name.pid" 2>/dev/null || true)
        [[ -n "$pid" ]] && stop_node "$pid"
    done
    if [[ $status -ne 0 ]]; then
        show_node_logs "$log_dir" A B
    fi
    delete_redis_keys "$redis_url" "$STORM_PREFIX"
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_a=$(free_port)
port_b=$(free_port)
while [[ "$port_b" == "$port_a" ]]; do port_b=$(free_port); done
export STORM_PORT_A="$port_a"
url_a="http://127.0.0.1:$port_a"
url_b="http://127.0.0.1:$port_b"

# Every connection is a file descriptor for the servers too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_node A "$port_a"
wait_ready A "$url_a" "$(cat "$work_dir/nodeA.pid")"
start_node B "$port_b"
wait_ready B "$url_b" "$(cat "$work_dir/nodeB.pid")"

# --- the run ------------------------------------------------------------------

echo "restart signal SIG${BENCH_RESTART_SIGNAL:-TERM}, history ${RELAIS_CHANNEL_HISTORY:-broadcast=5000/3600}" >&2
# In the background and waited for, so a TERM/INT to this script runs the
# trap at once (a foreground child would be waited for first).
"$load_bin" storm \
    --url "$url_a" --publish-url "$url_b" \
    --email "$STORM_EMAIL" --password "$STORM_PASSWORD" \
    --server-pid "$(cat "$work_dir/nodeA.pid")" \
    --exec-restart "'$self' __restart" \
    "$@" >"$work_dir/result.json" </dev/null &
load_pid=$!
status=0
wait "$load_pid" || status=$?
load_pid=""
result=$(cat "$work_dir/result.json")
case "$result" in
'{"scenario":"storm","clients"'*'}')
    printf '%s,"restart_signal":"%s","restart_pause_secs":%s}\n' "${result%\}}" \
        "${BENCH_RESTART_SIGNAL:-TERM}" "${BENCH_RESTART_PAUSE_SECS:-0}"
    ;;
*) printf '%s\n' "$result" ;;
esac
exit "$status"
