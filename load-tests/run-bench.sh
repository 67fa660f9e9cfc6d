#!/usr/bin/env bash
# Runs one relais-load scenario against a freshly started Relais server.
#
#   load-tests/run-bench.sh SCENARIO [relais-load options...]
#   load-tests/run-bench.sh fanout --subscribers 5000 --rate 20 --duration-secs 30
#   RELAIS_ASSISTANT_MAX_STREAMS_PER_USER=500 RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT=500 \
#     load-tests/run-bench.sh assistant --streams 500 --tokens 500 --tokens-per-sec 50
#
# Builds the release binaries, starts `relais serve` on a free loopback port
# with a throw-away data directory and known bootstrap admin credentials,
# waits for /readyz, runs the scenario with --url/--email/--password/
# --server-pid filled in, prints its JSON result line on stdout and stops
# the server on exit (also on failure or Ctrl-C).
#
# Environment overrides:
#   RELAIS_BIN              server binary (default: target/release/relais)
#   RELAIS_LOAD_BIN         load generator (default: target/release/relais-load)
#   SKIP_BUILD=1            do not run cargo build
#   RELAIS_LOG              server log filter (default: warn)
#   RELAIS_MAX_CONNECTIONS  server connection cap (default: 50000)
#   BENCH_SERVER_LOG        where the server's output goes
#                           (default: <temp dir>/server.log, shown on failure)
# Any other variable reaches the server too, e.g. RELAIS_ASSISTANT_* for the
# assistant scenario (its stream limits must be at least --streams).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 idle|fanout|publish|assistant|... [relais-load options...]" >&2
    exit 2
fi
scenario=$1
shift

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

server_bin=${RELAIS_BIN:-target/release/relais}
load_bin=${RELAIS_LOAD_BIN:-target/release/relais-load}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building release binaries..." >&2
    cargo build --release -p relais -p relais-load >&2
fi

email=admin@example.com
password='load-test-Password-1234'

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/relais-bench.XXXXXX")
server_log=${BENCH_SERVER_LOG:-$work_dir/server.log}
server_pid=""

cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        # Give it a few seconds for a graceful shutdown, then force it.
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$server_log" ]]; then
        echo "--- last server log lines ($server_log) ---" >&2
        tail -n 30 "$server_log" >&2 || true
    fi
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=load-tests/bench-lib.sh
source "$repo_root/load-tests/bench-lib.sh"

port=$(free_port)
url="http://127.0.0.1:$port"

# Every connection is a file descriptor for the server too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "starting $server_bin on $url (data in $work_dir/data)" >&2
RELAIS_BIND="127.0.0.1:$port" \
RELAIS_DATA_DIR="$work_dir/data" \
RELAIS_BOOTSTRAP_ADMIN_EMAIL="$email" \
RELAIS_BOOTSTRAP_ADMIN_PASSWORD="$password" \
RELAIS_MAX_CONNECTIONS="${RELAIS_MAX_CONNECTIONS:-50000}" \
RELAIS_LOG="${RELAIS_LOG:-warn}" \
    "$server_bin" serve >"$server_log" 2>&1 </dev/null &
server_pid=$!

wait_ready server "$url" "$server_pid" || exit 1

# The result line goes to stdout; `|| status=$?` keeps the trap's cleanup
# and still reports the scenario's exit status.
status=0
"$load_bin" "$scenario" \
    --url "$url" --email "$email" --password "$password" --server-pid "$server_pid" \
    "$@" || status=$?
exit "$status"
