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
