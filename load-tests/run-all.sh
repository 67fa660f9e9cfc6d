#!/usr/bin/env bash
# Runs every scenario of docs/benchmarks.md once against one hub binary and
# prints one line per scenario: `<label>\t<case>\t<JSON result>`.
# Used to compare two builds side by side on the same machine:
#
#   RELAIS_BIN=before/relais load-tests/run-all.sh before > before.tsv
#   RELAIS_BIN=after/relais  load-tests/run-all.sh after  > after.tsv
#   load-tests/run-all.sh --only fanout-5k,publish before   # a subset
#
# Always uses the same load generator (RELAIS_LOAD_BIN, default
# target/release/relais-load) and never builds: build both binaries first.
# Needs what the single scripts need: Redis on 127.0.0.1:6379 (cluster
# cases), PostgreSQL on 127.0.0.1:5432 (notification cases), python3 with
# aiosmtpd (email), node with client-sdk's node_modules (revocation).
# A case that fails prints its error as its result and the run goes on.
set -uo pipefail

only=""
if [[ "${1:-}" == --only ]]; then
    only=",$2,"
    shift 2
fi
label=${1:-run}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
export SKIP_BUILD=1
export RELAIS_BIN=${RELAIS_BIN:-target/release/relais}
load_bin=${RELAIS_LOAD_BIN:-target/release/relais-load}
export RELAIS_LOAD_BIN=$load_bin

work=$(mktemp -d "${TMPDIR:-/tmp}/relais-all.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The revocation probe is a Node script against a running hub; run-bench.sh
# starts the hub and hands its address to this stand-in for relais-load.
cat >"$work/revocation" <<EOF
#!/usr/bin/env bash
shift
while [[ \$# -gt 0 ]]; do
    case \$1 in
        --url) url=\$2; shift 2 ;;
        --email) email=\$2; shift 2 ;;
        --password) password=\$2; shift 2 ;;
        *) shift ;;
    esac
done
exec node "$repo_root/load-tests/revocation-latency.mjs" "\$url" default "\$email" "\$password" 20
EOF
chmod +x "$work/revocation"

# case name | command
cases=(
    "idle|load-tests/run-bench.sh idle --connections 19000 --workers 2 --hold-secs 10"
    "fanout-5k|load-tests/run-bench.sh fanout --subscribers 5000 --rate 20 --duration-secs 10"
    "fanout-10k|load-tests/run-bench.sh fanout --subscribers 10000 --rate 20 --duration-secs 10 --workers 2"
    "fanout-1k-1000|load-tests/run-bench.sh fanout --subscribers 1000 --rate 1000 --duration-secs 10 --workers 2"
    "publish|load-tests/run-bench.sh publish --connections 64 --duration-secs 10"
    "publish-batch|load-tests/run-bench.sh publish --connections 64 --duration-secs 10 --batch 50"
    "revocation|env RELAIS_LOAD_BIN=$work/revocation load-tests/run-bench.sh revocation"
    "cluster-5k|load-tests/run-cluster-bench.sh --subscribers 5000 --rate 20 --duration-secs 10"
    "cluster-1k-50|load-tests/run-cluster-bench.sh --subscribers 1000 --rate 50 --duration-secs 10"
    "single-1k-50|load-tests/run-bench.sh fanout --subscribers 1000 --rate 50 --duration-secs 10"
    "notify-sqlite|load-tests/run-notify-bench.sh fanout"
    "notify-postgres|load-tests/run-notify-bench.sh fanout --backend postgres"
    "inbox|env INBOX_HEAVY=0 load-tests/run-notify-bench.sh inbox --connections 8 --duration-secs 10"
    "email|load-tests/run-notify-bench.sh email"
    "planning|load-tests/run-bench.sh planning --stations 20 --broadcasters 200 --rate 200 --duration-secs 20"
    "queue-counts|env RELAIS_QUEUE_COUNTS_WINDOW_MS=50 load-tests/run-bench.sh queue-counts --consoles 1000 --rate 500 --duration-secs 20 --window-ms 50"
    "chat|load-tests/run-bench.sh chat --rooms 200 --members 10 --users 200 --rate 500 --duration-secs 20"
    "chat-cluster|env BENCH_SCENARIO=chat load-tests/run-cluster-bench.sh --rooms 200 --members 10 --users 200 --rate 500 --duration-secs 20"
    "channels|env RELAIS_CHANNEL_HISTORY=user=10/86400 RELAIS_MAX_CHANNELS=1100000 load-tests/run-bench.sh channels --subscribers 5000"
    "storm|load-tests/run-storm-bench.sh --clients 19000 --storm-timeout-secs 60"
    "assistant|env RELAIS_ASSISTANT_MAX_STREAMS_PER_USER=500 RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT=500 load-tests/run-bench.sh assistant --streams 500 --tokens 500 --tokens-per-sec 50"
)

for entry in "${cases[@]}"; do
    name=${entry%%|*}
    command=${entry#*|}
    if [[ -n "$only" && "$only" != *",$name,"* ]]; then
        continue
    fi
    echo "== $label $name: $command" >&2
    # Every JSON line the case prints, joined, so multi-line results
    # (cluster: fan-out then Redis) stay on one row.
    out=$(bash -c "$command" 2>"$work/stderr" | grep '^{' | paste -sd' ' -)
    if [[ -z "$out" ]]; then
        out="{\"error\":\"no result\",\"stderr\":$(tail -n 3 "$work/stderr" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
    fi
    printf '%s\t%s\t%s\n' "$label" "$name" "$out"
done
