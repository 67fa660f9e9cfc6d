# Helpers shared by the benchmark scripts (sourced, not run).

# A free port: ask the kernel (bind to port 0) when python3 is around,
# otherwise probe random high ports until one refuses connections.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

# N random bytes as hex (Redis key prefixes, secrets of a throw-away run).
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# show_node_logs DIR NAME...: the last lines of DIR/nodeNAME.log of each
# node, for a run that failed.
show_node_logs() {
    local dir=$1 name
    shift
    for name in "$@"; do
        if [[ -s "$dir/node$name.log" ]]; then
            echo "--- last lines of node $name's log ($dir/node$name.log) ---" >&2
            tail -n 30 "$dir/node$name.log" >&2 || true
        fi
    done
}

# delete_redis_keys URL PREFIX: removes a run's keys (after its nodes are
# gone, so nothing recreates them behind us).
delete_redis_keys() {
    redis-cli -u "$1" --scan --pattern "$2:*" 2>/dev/null |
        xargs -r redis-cli -u "$1" del >/dev/null 2>&1 || true
}

# check_cluster_prerequisites REDIS_URL SCRIPT: what a run of two nodes on
# Redis needs (the script's own path is passed to relais-load inside a
# single-quoted hook command).
check_cluster_prerequisites() {
    local tool
    for tool in redis-cli curl; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$tool is required" >&2
            exit 1
        fi
    done
    if ! redis-cli -u "$1" PING 2>/dev/null | grep -q PONG; then
        echo "Redis not reachable at $1 (set BENCH_REDIS_URL)" >&2
        exit 1
    fi
    case "$2" in
    *"'"*)
        echo "the script's path must not contain a single quote" >&2
        exit 1
        ;;
    esac
}

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ "${stat##*) }" != Z* ]]
}

# wait_ready NAME URL PID: waits up to 60 s for GET URL/readyz to answer 200.
wait_ready() {
    local name=$1 url=$2 pid=$3
    for _ in $(seq 1 1200); do
        if ! alive "$pid"; then
            echo "node $name exited during startup" >&2
            return 1
        fi
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/readyz" || true)" == 200 ]]; then
            echo "node $name ready (pid $pid)" >&2
            return 0
        fi
        sleep 0.05
    done
    echo "node $name not ready after 60s" >&2
    return 1
}

# start_cluster_node NAME PORT DIR LOG BIN REDIS_URL PREFIX JWT_SECRET EMAIL PASSWORD:
# starts node NAME of a run sharing DIR/relais.db and Redis, in the
# background, with its data in DIR/nodeNAME and its pid in DIR/nodeNAME.pid;
# its output is appended to LOG (a restarted node keeps one log). Other
# RELAIS_* variables of the caller's environment reach it.
start_cluster_node() {
    local name=$1 port=$2 dir=$3 log=$4 bin=$5
    mkdir -p "$dir/node$name"
    echo "starting node $name on http://127.0.0.1:$port (Redis prefix $7)" >&2
    # RELAIS_DATABASE_URL / RELAIS_REDIS_URL would win over the values
    # given here, so drop any the caller's environment carries.
    env -u RELAIS_DATABASE_URL -u RELAIS_REDIS_URL \
        RELAIS_BIND="127.0.0.1:$port" \
        RELAIS_DATA_DIR="$dir/node$name" \
        DATABASE_URL="sqlite://$dir/relais.db?mode=rwc" \
        REDIS_URL="$6" \
        RELAIS_REDIS_PREFIX="$7" \
        RELAIS_JWT_SECRET="$8" \
        RELAIS_BOOTSTRAP_ADMIN_EMAIL="$9" \
        RELAIS_BOOTSTRAP_ADMIN_PASSWORD="${10}" \
        RELAIS_MAX_CONNECTIONS="${RELAIS_MAX_CONNECTIONS:-50000}" \
        RELAIS_LOG="${RELAIS_LOG:-warn}" \
        "$bin" serve >>"$log" 2>&1 </dev/null &
    echo "$!" >"$dir/node$name.pid"
    # Not a job of this shell: no "Killed" notice when it is killed.
    disown "$!" 2>/dev/null || true
}
