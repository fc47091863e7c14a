#!/usr/bin/env bash
# nexus benchmark suite: the mock upstream alone ("direct"), nexus in front of it, and
# nginx in front of it, on 127.0.0.1, workload after workload. Prints a table and writes
# bench/RESULTS.md. How to run and how to read it: bench/README.md.
#
#   bash bench/run.sh [--only W1,W2,W3,W4,W5] [--no-install] [--oha] [--tls]
#       [--targets direct,floor,nexus,nexus-nodb,nexus-key1,nexus-pool3,nexus-clients100,nginx]
#
# Targets: direct (the mock upstream alone), floor (bench/floor_relay.rs: the leanest relay
# monoio allows, W1/W2 only, to show what the machine costs before nexus does any work),
# nexus (its defaults: the SQLite ledger on), nexus-nodb (NEXUS_DB=off, W1/W2 only: what
# the ledger costs), nexus-key1 (W1/W2 only: wrk's domain served by a file of one API key
# instead of CLAUDE_API_KEY: what pools are measured against), nexus-pool3 (W1/W2 only:
# that domain served by a pool file of 3 API-key members: what pools cost), nexus-clients100 (W1/W2
# only: a CLIENTS_FILE of 100 named clients with budgets in every window, wrk sending two
# of their keys: what named clients cost), nginx. After each run of those two, the script
# checks in nexus's /metrics that the pool's members (the named clients) served the
# requests, and fails the run when they did not.
#
# --tls adds W1 and W2 over HTTPS (W1-tls, W2-tls): nexus and nginx each terminating TLS
# with the same generated certificate (ECDSA P-256, openssl) and the same cipher
# (TLS 1.3, TLS_AES_256_GCM_SHA384, X25519), in the same rounds as the plain workloads.
#
# Environment: BENCH_SECS (10), BENCH_WARMUP_SECS (2), BENCH_WORKERS (1: workers of nexus,
# nginx and the floor relay; wrk always runs 2 threads, the mock upstream 1 per worker),
# BENCH_ROUNDS (3: W1, W2 and W3 run in this many rounds, every target once per round, the
# order reversed each round; the figures reported are the medians over the rounds),
# BENCH_W5_ROUNDS (9) and BENCH_W5_SECS (1): W5 runs in that many short rounds (warmed up
# as long as they last), so that a stall of the machine sets one round's p99 and not the
# reported median,
# W4_STREAMS (10000), W4_SECS (30), W4_INTERVAL_MS (100), W4_RAMP_MS (3000),
# BENCH_PAIR_SLICES (30; 0: none): the variants of nexus that an issue holds to a few per
# cent of a baseline (nexus ÷ nexus-nodb, nexus-pool3 ÷ nexus-key1, nexus-clients100 ÷
# nexus) are also measured in paired slices: both running at once, 1 s of W1 (W2) on
# each in turn, this many times, the median of the slices' ratios reported,
# BENCH_PORT_BASE (18100: uses it and the next four ports), BENCH_MAX_SECS (3000),
# BENCH_KEEP_TMP=1 keeps the temporary directory (logs, nginx prefix) for a look.
set -euo pipefail

# Bound the whole run: timeout signals this script's process group when time is up and
# the EXIT trap below stops whatever is still running.
if [[ -z "${NEXUS_BENCH_BOUNDED:-}" ]]; then
    export NEXUS_BENCH_BOUNDED=1
    exec timeout -k 20 "${BENCH_MAX_SECS:-3000}" bash "$0" "$@"
fi

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Seconds since this script started (bash's SECONDS): the report gives the whole run's
# length, installs and build included, against the 10-minute budget.
SECONDS=0

usage() {   # the comment block at the top of this file
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
    exit "${1:-0}"
}

# The invocation, for the report: arguments and any bench settings from the environment.
COMMAND="bash bench/run.sh${*:+ $*}"
for v in BENCH_ONLY BENCH_TARGETS BENCH_SECS BENCH_WARMUP_SECS BENCH_ROUNDS BENCH_W5_ROUNDS BENCH_W5_SECS \
    BENCH_PAIR_SLICES BENCH_WORKERS W4_STREAMS W4_SECS W4_INTERVAL_MS W4_RAMP_MS; do
    [[ -n "${!v:-}" ]] && COMMAND="$v=${!v} $COMMAND"
done
ONLY=${BENCH_ONLY:-W1,W2,W3,W4,W5}
TARGETS=${BENCH_TARGETS:-direct,floor,nexus,nexus-nodb,nexus-key1,nexus-pool3,nexus-clients100,nginx}
INSTALL=1
WITH_OHA=0
WITH_TLS=${BENCH_TLS:-0}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --targets) TARGETS=${2:?--targets needs a list}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --oha) WITH_OHA=1; shift ;;
        --tls) WITH_TLS=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench: unknown argument $1" >&2; usage 2 ;;
    esac
done

SECS=${BENCH_SECS:-10}
WARMUP=${BENCH_WARMUP_SECS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
W5_ROUNDS=${BENCH_W5_ROUNDS:-9}
W5_SECS=${BENCH_W5_SECS:-1}
PAIR_SLICES=${BENCH_PAIR_SLICES:-30}
# One worker each, as the benchmark issue measures: with load generator, mock and proxy on
# the same two cores, a second proxy worker only competes with wrk for them.
WORKERS=${BENCH_WORKERS:-1}
W4_STREAMS=${W4_STREAMS:-10000}
W4_SECS=${W4_SECS:-30}
W4_INTERVAL_MS=${W4_INTERVAL_MS:-100}
W4_RAMP_MS=${W4_RAMP_MS:-3000}
PORT_BASE=${BENCH_PORT_BASE:-18100}
UPORT=$PORT_BASE
NEXUS_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
FLOOR_PORT=$((PORT_BASE + 3))
PAIR_PORT=$((PORT_BASE + 4))   # the second nexus of a pair (see paired_slices)
for v in SECS WARMUP ROUNDS W5_ROUNDS W5_SECS PAIR_SLICES WORKERS W4_STREAMS W4_SECS W4_INTERVAL_MS W4_RAMP_MS PORT_BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a whole number, not '${!v}'" >&2; exit 2; }
done
(( WORKERS >= 1 && SECS >= 1 && ROUNDS >= 1 && W5_ROUNDS >= 1 && W5_SECS >= 1 && W4_STREAMS >= 1 && W4_INTERVAL_MS >= 1 )) \
    || { echo "bench: BENCH_WORKERS, BENCH_SECS, BENCH_ROUNDS, BENCH_W5_ROUNDS, BENCH_W5_SECS, W4_STREAMS and W4_INTERVAL_MS must be at least 1" >&2; exit 2; }
WRK_THREADS=2

has() { [[ ",$1," == *",$2,"* ]]; }
log() { printf 'bench: %s\n' "$*" >&2; }
FAILED=0
NOTES=()
note() { NOTES+=("$*"); log "note: $*"; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- processes we start
WORK=$(mktemp -d /tmp/nexus-bench.XXXXXX)
STARTED=()          # every pid this script started; the EXIT trap stops each one
POLICY_RC_CREATED=0

alive() { kill -0 "$1" 2>/dev/null; }

stop_pid() {
    local pid=$1 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; forget_pid "$pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Drops a stopped pid from STARTED, so a recycled pid is never signalled later.
forget_pid() {
    local keep=() p
    for p in "${STARTED[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    STARTED=("${keep[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${STARTED[@]}"; do
        stop_pid "$pid"
    done 2>/dev/null
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ -n "${BENCH_KEEP_TMP:-}" ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Pids whose parent is $1 (read from /proc: a minimal Debian has no procps).
children_of() {
    local parent=$1 f line state ppid
    for f in /proc/[0-9]*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        read -r state ppid _ <<<"${line##*) }"
        if [[ $ppid == "$parent" ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_thread_gone PID COMM WHAT: until no thread of PID is named COMM (Linux keeps the
# first 15 bytes of a thread's name), at most 120 s.
wait_thread_gone() {
    local pid=$1 comm=$2 what=$3 i
    for ((i = 0; i < 1200; i++)); do
        grep -qxF "$comm" /proc/"$pid"/task/*/comm 2>/dev/null || return 0
        sleep 0.1
    done
    note "$what was still running after 120 s; the run measured it too"
}

# wait_ready PID LOG PORT WHAT [PATTERN]: until PATTERN shows in LOG (or PORT accepts).
wait_ready() {
    local pid=$1 logf=$2 port=$3 what=$4 pattern=${5:-} i
    for ((i = 0; i < 300; i++)); do
        if ! alive "$pid"; then
            log "$what exited during start-up; its log:"
            tail -n 30 "$logf" >&2 || true
            die "$what did not start"
        fi
        if [[ -n "$pattern" ]]; then
            grep -q "$pattern" "$logf" 2>/dev/null && return 0
        elif port_open "$port"; then
            return 0
        fi
        sleep 0.05
    done
    tail -n 30 "$logf" >&2 || true
    die "$what was not ready after 15 s"
}

# ---------------------------------------------------------------- install and build
install_missing() {
    local need=()
    command -v wrk >/dev/null || need+=(wrk)
    if has "$TARGETS" nginx && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
        need+=(nginx)
    fi
    [[ ${#need[@]} -eq 0 ]] && return 0
    [[ $INSTALL == 1 ]] || die "missing ${need[*]} (run without --no-install, or install them)"
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || die "missing ${need[*]} and not root (no sudo)"
        sudo=(sudo)
    fi
    local pkgs=() p
    for p in "${need[@]}"; do
        if [[ $p == nginx ]]; then
            # Debian ships nginx-light (bookworm: the core nginx plus one module); else nginx.
            if apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then
                pkgs+=(nginx-light)
            else
                pkgs+=(nginx)
            fi
        else
            pkgs+=("$p")
        fi
    done
    log "installing ${pkgs[*]}"
    "${sudo[@]}" apt-get update -qq
    # The package would start a system nginx on port 80; policy-rc.d (exit 101) forbids
    # that for the duration of the install, so the machine keeps no daemon of ours.
    if [[ ! -e /usr/sbin/policy-rc.d && $(id -u) == 0 ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" >&2
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

install_missing
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

if [[ $WITH_OHA == 1 ]] && ! command -v oha >/dev/null && [[ ! -x "$HOME/.cargo/bin/oha" ]]; then
    log "installing oha (cargo install oha --locked; takes a few minutes)"
    cargo install oha --locked >&2
fi
OHA_BIN=$(command -v oha || echo "$HOME/.cargo/bin/oha")

log "building nexus and the bench programs (release)"
cargo build --release --locked --bin nexus --example mock_upstream --example open_streams \
    --example usage_throughput --example floor_relay --example ledger_writer >&2 \
    || die "cargo build failed"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NEXUS_BIN=$TARGET_DIR/release/nexus
MOCK_BIN=$TARGET_DIR/release/examples/mock_upstream
STREAMS_BIN=$TARGET_DIR/release/examples/open_streams
FLOOR_BIN=$TARGET_DIR/release/examples/floor_relay
PARSERS_BIN=$TARGET_DIR/release/examples/usage_throughput
LEDGER_BIN=$TARGET_DIR/release/examples/ledger_writer

# ---------------------------------------------------------------- limits
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -Sn "$HARD_NOFILE" 2>/dev/null || true
NOFILE=$(ulimit -Sn)
# A single-process proxy holds two sockets per stream (client side + upstream side).
if has "$ONLY" W4 && (( NOFILE < 2 * W4_STREAMS + 500 )); then
    capped=$(( (NOFILE - 500) / 2 ))
    note "W4 capped from $W4_STREAMS to $capped streams: the open-file limit is $NOFILE (ulimit -Hn; raising it needs CAP_SYS_RESOURCE) and a single-process proxy needs 2 per stream"
    W4_STREAMS=$capped
fi

for port in "$UPORT" "$NEXUS_PORT" "$NGINX_PORT" "$FLOOR_PORT" "$PAIR_PORT"; do
    port_open "$port" && die "port $port on 127.0.0.1 is in use (set BENCH_PORT_BASE)"
done

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- TLS (--tls)
# One certificate for both proxies, made here: ECDSA P-256 for localhost and 127.0.0.1.
# nginx is held to the cipher rustls picks for wrk's (OpenSSL's) preference order, so both
# do the same cryptography; the report shows what each negotiated.
TLS_RUN=0           # 1 while an HTTPS workload runs: start_target serves TLS
TLS_CIPHER=TLS_AES_256_GCM_SHA384
if [[ $WITH_TLS == 1 ]]; then
    command -v openssl >/dev/null || die "--tls needs openssl (to make the certificate)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>"$WORK/openssl.log" \
        || die "openssl could not make the bench certificate: $(tail -n 2 "$WORK/openssl.log")"
    chmod 600 "$WORK/tls.key"
fi
# negotiated PORT: "TLSv1.3 TLS_AES_256_GCM_SHA384" as openssl s_client sees it.
negotiated() {
    timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null \
        | awk '/^New, / { print $2, $NF; exit }' | tr -d ','
}

# ---------------------------------------------------------------- /proc figures
# ticks EXPR pids...: an awk expression over /proc/PID/stat's fields after the command name
# ($12 utime, $13 stime), summed over the given pids (clock ticks)
ticks() {
    local expr=$1 total=0 pid fields
    shift
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$(( total + $(awk "{print $expr}" <<<"$fields") ))
    done
    echo "$total"
}
cpu_ticks() { ticks '$12 + $13' "$@"; }   # utime+stime
user_ticks() { ticks '$12' "$@"; }        # utime alone
status_kb() {   # status_kb FIELD pids...: FIELD (VmHWM, VmRSS) summed, in KiB
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null) || v=0
        total=$(( total + ${v:-0} ))
    done
    echo "$total"
}

# ---------------------------------------------------------------- pool and named clients
# wrk sends "Host: 127.0.0.1:PORT", so its requests name the domain 127.0.0.1 (nexus
# strips the port).
WRK_DOMAIN=127.0.0.1
# nexus-pool3: that domain's file makes it a pool of three API-key members (the mock
# answers any key); nexus-key1: a file of one API key, the single-credential domain issue
# 20 measures a pool against. Each file sits in a credentials directory of its own: the
# other nexus targets keep serving from CLAUDE_API_KEY.
POOL_DIR=$WORK/credentials-pool3
POOL_MEMBERS=(bench-key-1 bench-key-2 bench-key-3)
KEY1_DIR=$WORK/credentials-key1
write_pool_file() {
    local members=() id
    for id in "${POOL_MEMBERS[@]}"; do
        members+=("{\"id\":\"$id\",\"type\":\"api_key\",\"api_key\":\"sk-ant-api03-$id\"}")
    done
    mkdir -p -m 700 "$POOL_DIR"
    (IFS=,; printf '{"type":"pool","credentials":[%s]}\n' "${members[*]}") >"$POOL_DIR/$WRK_DOMAIN.credentials.json"
    chmod 600 "$POOL_DIR/$WRK_DOMAIN.credentials.json"
}
write_key1_file() {
    mkdir -p -m 700 "$KEY1_DIR"
    printf '{"type":"api_key","api_key":"sk-ant-api03-bench-key1"}\n' >"$KEY1_DIR/$WRK_DOMAIN.credentials.json"
    chmod 600 "$KEY1_DIR/$WRK_DOMAIN.credentials.json"
}

# nexus-clients100: 100 named clients, each with a budget in dollars and in tokens in
# every window, far above what the whole suite spends (a refusal would measure the 429
# path): the mock's answers cost ~$0.005 and ~4 100 tokens each, so this target's runs in
# a default suite (~4 million requests) spend ~$20 000 and ~2e10 tokens in all, while each
# client's budgets are $1e9 and 1e15 tokens.
# The file is not clients.json in nexus's working directory, which every nexus target
# would read: only this target is given it, as CLIENTS_FILE.
CLIENTS_PATH=$WORK/clients100.json
CLIENT_COUNT=100
client_name() { printf 'bench-client-%03d' "$1"; }
client_key() { printf 'nx-bench-key-%03d' "$1"; }
write_clients_file() {
    local i sep="" usd=1000000000 tokens=1000000000000000 usd_windows tokens_windows
    usd_windows="{\"5h\":$usd,\"day\":$usd,\"week\":$usd,\"month\":$usd}"
    tokens_windows="{\"5h\":$tokens,\"day\":$tokens,\"week\":$tokens,\"month\":$tokens}"
    {
        printf '{"clients":[\n'
        for ((i = 1; i <= CLIENT_COUNT; i++)); do
            printf '%s{"name":"%s","key":"%s","budget":{"usd":%s,"tokens":%s}}' \
                "$sep" "$(client_name "$i")" "$(client_key "$i")" "$usd_windows" "$tokens_windows"
            sep=$',\n'
        done
        printf '\n]}\n'
    } >"$CLIENTS_PATH"
    chmod 600 "$CLIENTS_PATH"
}
# The keys wrk sends (bench/wrk/messages.lua, BENCH_API_KEYS): one per wrk thread, so
# that wrk keeps sending one prebuilt request per thread (a key per request would need a
# Lua request() call per request, which costs wrk CPU that the other targets' runs do not
# spend). The first and the last client: keys are found by their digest, so which
# two does not matter.
CLIENTS_SENT=(1 "$CLIENT_COUNT")
# Every other target gets a key of the same length that nobody checks: every SDK sends a
# key, and nexus-clients100 against nexus measures the named clients, not the parsing of
# a header only one of the two requests carried.
ANY_KEY=nx-bench-key-any
# keys_sent TARGET: the x-api-key values wrk sends to TARGET (comma-separated).
keys_sent() {
    local i keys=()
    if [[ $1 != nexus-clients100 ]]; then echo "$ANY_KEY"; return; fi
    for i in "${CLIENTS_SENT[@]}"; do keys+=("$(client_key "$i")"); done
    (IFS=,; echo "${keys[*]}")
}

if has "$TARGETS" nexus-pool3; then write_pool_file; fi
if has "$TARGETS" nexus-key1; then write_key1_file; fi
if has "$TARGETS" nexus-clients100; then write_clients_file; fi

# ---------------------------------------------------------------- targets
MOCK_PID=""
start_mock() {
    "$MOCK_BIN" --port "$UPORT" --workers "$WORKERS" >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    STARTED+=("$MOCK_PID")
    wait_ready "$MOCK_PID" "$WORK/mock.log" "$UPORT" "mock upstream" "listening on 127.0.0.1:$UPORT"
}

TARGET_PORT=""
TARGET_PIDS=()      # the proxy processes whose CPU and memory are measured
TARGET_MAIN=""      # the process started (nexus, nginx master)
TARGET_LOG=""       # where it logs
RUN_SEQ=0

# start_target TARGET [CONNECTIONS [PORT DIR]]: CONNECTIONS sizes nginx's worker_connections,
# which it preallocates (so a W4-sized table would inflate its RSS in W1-W3). A nexus
# target listens on PORT (NEXUS_PORT) with DIR ($WORK, where its ledger file is) as its
# working directory: the second nexus of a pair runs beside the first.
start_target() {
    local target=$1 want_conns=${2:-1024} port=${3:-$NEXUS_PORT} dir=${4:-$WORK}
    RUN_SEQ=$((RUN_SEQ + 1))
    TARGET_PIDS=()
    TARGET_MAIN=""
    TARGET_LOG=""
    case "$target" in
        direct)
            TARGET_PORT=$UPORT
            ;;
        floor)
            TARGET_PORT=$FLOOR_PORT
            TARGET_LOG="$WORK/floor.$RUN_SEQ.log"
            "$FLOOR_BIN" --port "$FLOOR_PORT" --upstream "127.0.0.1:$UPORT" --workers "$WORKERS" \
                >"$TARGET_LOG" 2>&1 &
            TARGET_MAIN=$!
            STARTED+=("$TARGET_MAIN")
            wait_ready "$TARGET_MAIN" "$TARGET_LOG" "$FLOOR_PORT" "floor relay" "listening on 127.0.0.1:$FLOOR_PORT"
            TARGET_PIDS=("$TARGET_MAIN")
            ;;
        nexus|nexus-nodb|nexus-key1|nexus-pool3|nexus-clients100)
            TARGET_PORT=$port
            TARGET_LOG="$WORK/$target.$RUN_SEQ.log"
            # Each variant is nexus at its defaults with one setting changed (env: the
            # last assignment of a name wins).
            local variant=()
            case $target in
                nexus-nodb) variant=(NEXUS_DB=off) ;;
                nexus-pool3) variant=(CREDENTIALS_DIR="$POOL_DIR") ;;
                nexus-key1) variant=(CREDENTIALS_DIR="$KEY1_DIR") ;;
                nexus-clients100) variant=(CLIENTS_FILE="$CLIENTS_PATH") ;;
            esac
            local tls_env=()
            if [[ $TLS_RUN == 1 ]]; then
                tls_env=(TLS_CERT_FILE="$WORK/tls.crt" TLS_KEY_FILE="$WORK/tls.key")
            fi
            mkdir -p "$dir"
            (
                cd "$dir"   # no stray .env or credentials/ from the checkout
                exec env UPSTREAM_URL="http://127.0.0.1:$UPORT" CLAUDE_API_KEY=sk-ant-api03-bench \
                    STATS_INTERVAL_SECS=0 CREDENTIALS_DIR="$WORK/credentials" NEXUS_DB=sqlite:nexus.db \
                    "${variant[@]}" "${tls_env[@]}" \
                    "$NEXUS_BIN" -p "$port" -H 127.0.0.1 -w "$WORKERS"
            ) >"$TARGET_LOG" 2>&1 &
            TARGET_MAIN=$!
            STARTED+=("$TARGET_MAIN")
            wait_ready "$TARGET_MAIN" "$TARGET_LOG" "$port" nexus "listening on 127.0.0.1:$port"
            TARGET_PIDS=("$TARGET_MAIN")
            # With named clients nexus reads their earlier spend back from the ledger at
            # start, on a thread of its own. The ledger holds every earlier nexus run's rows
            # (millions by W2), so that scan takes seconds of CPU, counted in this process's
            # figures: a cost of starting, not of a request. The warm-up waits for it.
            if [[ $target == nexus-clients100 ]]; then
                wait_thread_gone "$TARGET_MAIN" nexus-ledger-re "nexus-clients100's spend read-back"
            fi
            ;;
        nginx)
            TARGET_PORT=$NGINX_PORT
            local prefix="$WORK/nginx.$RUN_SEQ"
            mkdir -p "$prefix"
            local conns=$(( want_conns > NOFILE ? NOFILE : want_conns ))
            local listen_ssl=""
            : >"$prefix/tls.conf"
            if [[ $TLS_RUN == 1 ]]; then
                listen_ssl="ssl "
                printf '%s\n' "ssl_certificate $WORK/tls.crt;" "ssl_certificate_key $WORK/tls.key;" \
                    "ssl_protocols TLSv1.3;" "ssl_conf_command Ciphersuites $TLS_CIPHER;" \
                    "ssl_ecdh_curve X25519;" "ssl_session_tickets on;" >"$prefix/tls.conf"
            fi
            sed -e "s#@PREFIX@#$prefix#g" -e "s#@WORKERS@#$WORKERS#g" -e "s#@LISTEN_PORT@#$NGINX_PORT#g" \
                -e "s#@LISTEN_SSL@#$listen_ssl#g" \
                -e "s#@UPSTREAM_PORT@#$UPORT#g" -e "s#@NOFILE@#$NOFILE#g" -e "s#@WORKER_CONNECTIONS@#$conns#g" \
                "$ROOT/bench/nginx.conf.in" >"$prefix/nginx.conf"
            TARGET_LOG="$prefix/error.log"
            "$NGINX_BIN" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$prefix/stdout.log" 2>&1 &
            TARGET_MAIN=$!
            STARTED+=("$TARGET_MAIN")
            wait_ready "$TARGET_MAIN" "$prefix/stdout.log" "$NGINX_PORT" nginx
            local i workers=()
            for ((i = 0; i < 100; i++)); do
                mapfile -t workers < <(children_of "$TARGET_MAIN")
                [[ ${#workers[@]} -ge $WORKERS ]] && break
                sleep 0.05
            done
            [[ ${#workers[@]} -ge 1 ]] || die "nginx started no worker processes"
            TARGET_PIDS=("${workers[@]}")
            STARTED+=("${workers[@]}")   # stopped by id too, should the master die first
            ;;
    esac
}

# Stops the target, then files any warning or error it logged as a note.
stop_target() {
    local target=$1 label=$2
    [[ -z "$TARGET_MAIN" ]] && return 0
    if ! alive "$TARGET_MAIN"; then
        note "$target died during $label"
        FAILED=1
    fi
    stop_pid "$TARGET_MAIN"
    local pid
    for pid in "${TARGET_PIDS[@]}"; do stop_pid "$pid"; done
    local logf=$TARGET_LOG
    if [[ -n "$logf" && -f "$logf" ]]; then
        local lines
        # (nexus logs every request at its default level: only its WARN and ERROR lines.)
        lines=$(grep -v "listening on" "$logf" | grep -E -i 'warn|error|crit|alert|emerg|panic' \
            | grep -v -E '^[0-9TZ:.-]+ INFO ' \
            | sed -E -e 's/^\[?[0-9TZ:.\/ -]+\]? ?//' -e 's/[0-9]+#[0-9]+: (\*[0-9]+ )?//' | sort | uniq -c | sort -rn | head -n 8 || true)
        if [[ -n "$lines" ]]; then
            note "$target log during $label (count, line):"$'\n'"$lines"
        fi
    fi
    TARGET_MAIN=""
    TARGET_PIDS=()
    TARGET_LOG=""
}

# ---------------------------------------------------------------- results
declare -A R
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "" || v == "-") print "—"; else printf "%.*f", d, v }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.6f", a / b }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-") print "-"; else printf "%.3f", a - b }'; }
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# lua_env TARGET QUERY STREAM BODY_BYTES SHAPE: LUA_ENV, the environment that tells
# bench/wrk/messages.lua what to send TARGET.
LUA_ENV=()
lua_env() {
    LUA_ENV=(BENCH_QUERY="$2" BENCH_STREAM="$3" BENCH_BODY_BYTES="$4" BENCH_BODY_SHAPE="$5"
        BENCH_API_KEYS="$(keys_sent "$1")")
}

# wrk_summary OUT KEY TARGET LABEL: the summary line messages.lua printed into OUT, as
# R[KEY|TARGET|reqs, rps, p50, p99, err]; errors are noted. Fails when there is none.
wrk_summary() {
    local out=$1 key=$2 target=$3 label=$4 line
    line=$(grep '^BENCH ' "$out" || true)
    if [[ -z "$line" ]]; then
        note "$label against $target: wrk printed no summary: $(tail -n 3 "$out" | tr '\n' ' ')"
        FAILED=1
        return 1
    fi
    local reqs dur
    reqs=$(kv "$line" requests)
    dur=$(kv "$line" duration_us)
    R[$key|$target|reqs]=$reqs
    R[$key|$target|rps]=$(awk -v r="$reqs" -v d="$dur" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    R[$key|$target|p50]=$(awk -v v="$(kv "$line" p50_us)" 'BEGIN { printf "%.3f", v / 1000 }')
    R[$key|$target|p99]=$(awk -v v="$(kv "$line" p99_us)" 'BEGIN { printf "%.3f", v / 1000 }')
    local errs=0 k
    for k in err_connect err_read err_write err_status err_timeout; do
        errs=$((errs + $(kv "$line" "$k")))
    done
    R[$key|$target|err]=$errs
    if (( errs > 0 )); then
        note "$label against $target: $errs errors ($(grep -o 'err_[a-z]*=[1-9][0-9]*' <<<"$line" | tr '\n' ' '))"
    fi
}

# wrk_run WORKLOAD TARGET CONNS THREADS QUERY STREAM BODY_BYTES SHAPE [ROUND]: measures for
# secs_of WORKLOAD seconds; the figures go to R[WORKLOAD|TARGET|…], with ROUND to
# R[WORKLOAD.rROUND|TARGET|…] (see median_rounds).
wrk_run() {
    local w=$1 target=$2 conns=$3 threads=$4 query=$5 stream=$6 body=$7 shape=$8 round=${9:-}
    local key=$w label=$w
    if [[ -n $round ]]; then
        key="$w.r$round"
        label="$w round $round"
    fi
    local url="http://127.0.0.1:$TARGET_PORT" out="$WORK/$key.$target.wrk" secs warmup=$WARMUP
    if [[ $TLS_RUN == 1 ]]; then
        url="https://localhost:$TARGET_PORT"
        [[ -n "${R[$w|$target|tls]:-}" ]] || R[$w|$target|tls]=$(negotiated "$TARGET_PORT")
    fi
    secs=$(secs_of "$w")
    if [[ $w == W5 ]] && (( warmup > secs )); then warmup=$secs; fi
    lua_env "$target" "$query" "$stream" "$body" "$shape"
    if (( warmup > 0 )); then
        env "${LUA_ENV[@]}" timeout --foreground $((warmup + 30)) wrk -t"$threads" -c"$conns" -d"${warmup}s" \
            -s "$ROOT/bench/wrk/messages.lua" "$url" >/dev/null 2>&1 || true
    fi
    local c0 c1 u0 u1
    c0=$(cpu_ticks "${TARGET_PIDS[@]}")
    u0=$(user_ticks "${TARGET_PIDS[@]}")
    env "${LUA_ENV[@]}" timeout --foreground $((secs + 30)) wrk -t"$threads" -c"$conns" -d"${secs}s" --latency --timeout 10s \
        -s "$ROOT/bench/wrk/messages.lua" "$url" >"$out" 2>&1 || true
    c1=$(cpu_ticks "${TARGET_PIDS[@]}")
    u1=$(user_ticks "${TARGET_PIDS[@]}")
    wrk_summary "$out" "$key" "$target" "$label" || return 0
    local reqs=${R[$key|$target|reqs]}
    if [[ ${#TARGET_PIDS[@]} -gt 0 ]]; then
        R[$key|$target|cpu]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v r="$reqs" 'BEGIN { if (r > 0) printf "%.2f", t / hz * 1e6 / r; else print "-" }')
        # The share of that CPU spent in user space: the proxy's own code, its runtime and
        # libc; the rest is the kernel (TCP, io_uring or epoll).
        R[$key|$target|user]=$(awk -v u=$((u1 - u0)) -v t=$((c1 - c0)) 'BEGIN { if (t > 0) printf "%.1f", 100 * u / t; else print "-" }')
        R[$key|$target|rss]=$(awk -v k="$(status_kb VmHWM "${TARGET_PIDS[@]}")" 'BEGIN { printf "%.1f", k / 1024 }')
    else
        R[$key|$target|cpu]="-"
        R[$key|$target|user]="-"
        R[$key|$target|rss]="-"
    fi
    log "$label $target: $(printf '%s req/s, p50 %s ms, p99 %s ms, cpu %s us/req, peak rss %s MiB, errors %s' \
        "${R[$key|$target|rps]}" "${R[$key|$target|p50]}" "${R[$key|$target|p99]}" "${R[$key|$target|cpu]}" "${R[$key|$target|rss]}" "${R[$key|$target|err]}")"
}

median() {   # the median of the numeric arguments ("" and "-" skipped), or - when there is none
    printf '%s\n' "$@" | awk '$1 != "" && $1 != "-" { v[n++] = $1 + 0 }
        END {
            if (n == 0) { print "-"; exit }
            for (i = 1; i < n; i++) {   # insertion sort: a handful of values
                x = v[i]
                for (j = i - 1; j >= 0 && v[j] > x; j--) v[j + 1] = v[j]
                v[j + 1] = x
            }
            if (n % 2) m = v[(n - 1) / 2]; else m = (v[n / 2 - 1] + v[n / 2]) / 2
            printf "%.6f\n", m
        }'
}

# rounds_of WORKLOAD, secs_of WORKLOAD: how many rounds it runs in, how long each.
rounds_of() {
    case $1 in
        W1 | W2 | W3 | W1-tls | W2-tls) echo "$ROUNDS" ;;
        W5) echo "$W5_ROUNDS" ;;
        *) echo 1 ;;
    esac
}
secs_of() {
    if [[ $1 == W5 ]]; then echo "$W5_SECS"; else echo "$SECS"; fi
}

# median_rounds WORKLOAD TARGET: R[WORKLOAD|TARGET|…] from the rounds' R[WORKLOAD.rN|TARGET|…]:
# each figure the median over the rounds that measured it (each figure on its own: the
# median req/s and the median p99 may come from different rounds), errors summed. When no
# round printed a summary the target gets no figures, as a single failed run gets none.
median_rounds() {
    local w=$1 target=$2 k r vals errs=0 n=0 rounds
    rounds=$(rounds_of "$w")
    for ((r = 1; r <= rounds; r++)); do
        [[ -n "${R[$w.r$r|$target|rps]:-}" ]] || continue
        n=$((n + 1))
        errs=$((errs + ${R[$w.r$r|$target|err]:-0}))
    done
    (( n > 0 )) || return 0
    for k in rps p50 p99 cpu user rss; do
        vals=()
        for ((r = 1; r <= rounds; r++)); do
            vals+=("${R[$w.r$r|$target|$k]:-}")
        done
        R[$w|$target|$k]=$(median "${vals[@]}")
    done
    R[$w|$target|err]=$errs
    log "$w $target, median of $n rounds: $(printf '%s req/s, p50 %s ms, p99 %s ms, cpu %s us/req, peak rss %s MiB, errors %s' \
        "$(fmt "${R[$w|$target|rps]}" 1)" "$(fmt "${R[$w|$target|p50]}" 3)" "$(fmt "${R[$w|$target|p99]}" 3)" \
        "$(fmt "${R[$w|$target|cpu]}" 2)" "$(fmt "${R[$w|$target|rss]}" 1)" "$errs")"
}

# oha_run WORKLOAD TARGET CONNS QUERY STREAM BODY_BYTES: a second opinion on W1/W2.
oha_run() {
    local w=$1 target=$2 conns=$3 query=$4 stream=$5 body=$6
    local bodyf="$WORK/oha-body.json" out="$WORK/$w.$target.oha"
    local stream_field=""
    [[ $stream == 1 ]] && stream_field='"stream":true,'
    local prefix="{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,${stream_field}\"system\":\"You are a concise assistant.\",\"messages\":[{\"role\":\"user\",\"content\":\""
    local suffix='"}]}'
    local pad=$(( body - ${#prefix} - ${#suffix} ))
    (( pad < 0 )) && pad=0
    printf '%s%s%s' "$prefix" "$(head -c "$pad" /dev/zero | tr '\0' x)" "$suffix" >"$bodyf"
    local c0 c1 key_header=(-H "x-api-key: $(keys_sent "$target" | cut -d, -f1)")
    c0=$(cpu_ticks "${TARGET_PIDS[@]}")
    timeout --foreground $((SECS + 30)) "$OHA_BIN" --no-tui -z "${SECS}s" -c "$conns" -m POST \
        -H 'content-type: application/json' "${key_header[@]}" -D "$bodyf" \
        "http://127.0.0.1:$TARGET_PORT/v1/messages$query" >"$out" 2>&1 || true
    c1=$(cpu_ticks "${TARGET_PIDS[@]}")
    local responses
    responses=$(awk '/^ *\[[0-9]+\] [0-9]+ responses/ { n += $2 } END { print n + 0 }' "$out")
    if [[ ${#TARGET_PIDS[@]} -gt 0 ]]; then
        R[$w-oha|$target|cpu]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v r="$responses" 'BEGIN { if (r > 0) printf "%.2f", t / hz * 1e6 / r; else print "-" }')
    fi
    R[$w-oha|$target|rps]=$(awk '/Requests\/sec:/ {print $2; exit}' "$out")
    R[$w-oha|$target|p50]=$(oha_pct "$out" 50.00)
    R[$w-oha|$target|p99]=$(oha_pct "$out" 99.00)
    R[$w-oha|$target|ok]=$(awk '/Success rate:/ {print $3; exit}' "$out")
    log "$w (oha) $target: ${R[$w-oha|$target|rps]:-?} req/s, p50 ${R[$w-oha|$target|p50]:-?} ms, p99 ${R[$w-oha|$target|p99]:-?} ms"
}
oha_pct() {   # "50.00% in 0.0010 secs" (or ms) → milliseconds
    awk -v p="$2%" '$1 == p && $2 == "in" { v = $3; u = $4; if (u ~ /^secs?/) v *= 1000; else if (u ~ /^(us|µs)/) v /= 1000; print v; exit }' "$1"
}

# ---------------------------------------------------------------- who served the requests
# nexus-pool3 and nexus-clients100 measure a pool and named clients only when those served
# the requests: a file nexus did not load, a key it did not know or a budget it enforced
# would measure CLAUDE_API_KEY, or the 401 or 429 path, at full speed. So after each of
# their runs, before nexus stops, its /metrics must show them at work.

# nexus_metrics: nexus's /metrics (Prometheus text) without the response head, over
# bash's /dev/tcp, so that the bench needs no HTTP client.
nexus_metrics() {
    timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
        cat <&3' _ "$TARGET_PORT" | tr -d '\r' | sed '1,/^$/d'
}
# metric TEXT SERIES: one series' value, e.g. SERIES 'nexus_errors_total{domain="a"}'.
metric() { awk -v s="$2" '$1 == s { print $2; exit }' <<<"$1"; }

# served_series TARGET: the series that count the requests its pool members (its clients
# whose keys wrk sends) served; nothing for the other targets.
served_series() {
    local id
    case $1 in
        nexus-pool3)
            for id in "${POOL_MEMBERS[@]}"; do
                echo "nexus_credential_requests_total{domain=\"$WRK_DOMAIN\",credential=\"$id\"}"
            done ;;
        nexus-key1)
            echo "nexus_credential_requests_total{domain=\"$WRK_DOMAIN\",credential=\"default\"}" ;;
        nexus-clients100)
            for id in "${CLIENTS_SENT[@]}"; do
                echo "nexus_client_requests_total{client=\"$(client_name "$id")\"}"
            done ;;
    esac
}

declare -A SERVED   # TARGET → "W1 round 1: 1 / 2 / 3; …": what check_served found, for the report

# check_served WORKLOAD TARGET LABEL [ROUND]: each of served_series counted requests,
# together at least as many as wrk completed in the measured run (nexus's counters
# include the warm-up), nexus counted no error on the domain (a request its client's
# budget or lists refused is one), and nexus-clients100 loaded all its clients. Every
# nexus with the ledger on kept every row: a writer that fell behind and dropped rows
# did less than the work measured. If not, the run fails and its figures are dropped
# from the medians.
check_served() {
    local w=$1 target=$2 label=$3 key=$1 series=() m s n sum=0 split="" problems="" reqs
    [[ -n ${4:-} ]] && key="$w.r$4"
    mapfile -t series < <(served_series "$target")
    local ledger=0
    [[ $target == nexus* && $target != nexus-nodb ]] && ledger=1
    (( ${#series[@]} > 0 || ledger )) || return 0
    reqs=${R[$key|$target|reqs]:-}
    [[ -n $reqs ]] || return 0   # wrk printed no summary: noted as failed already
    m=$(nexus_metrics) || true
    if [[ -z $m ]]; then
        problems="could not read nexus's /metrics; "
    else
        if (( ledger )); then
            n=$(metric "$m" nexus_ledger_dropped_total)
            [[ ${n:-0} == 0 ]] || problems+="the ledger dropped $n rows; "
        fi
        for s in "${series[@]}"; do
            n=$(metric "$m" "$s")
            split+="${split:+ / }${n:-0}"
            sum=$((sum + ${n:-0}))
            [[ ${n:-0} != 0 ]] || problems+="$s is ${n:-absent}; "
        done
        if (( ${#series[@]} > 0 )); then
            (( sum >= reqs )) || problems+="they served $sum requests, wrk completed $reqs; "
            n=$(metric "$m" "nexus_errors_total{domain=\"$WRK_DOMAIN\"}")
            [[ ${n:-0} == 0 ]] || problems+="nexus counted $n errors on $WRK_DOMAIN; "
        fi
        if [[ $target == nexus-clients100 ]]; then
            n=$(grep -c '^nexus_client_requests_total{' <<<"$m" || true)
            (( n == CLIENT_COUNT )) || problems+="nexus loaded $n named clients, not $CLIENT_COUNT; "
        fi
    fi
    if [[ -n $problems ]]; then
        note "$label against $target did not measure what it says, its figures are dropped: ${problems%; }"
        FAILED=1
        drop_run "$key" "$target"
        return 0
    fi
    (( ${#series[@]} > 0 )) || return 0
    SERVED[$target]+="${SERVED[$target]:+; }$label: $split"
    log "$label $target: served by $(served_who "$target"): $split requests since start (wrk completed $reqs)"
}

# served_who TARGET: whom served_series counts, for the log and the report.
served_who() {
    local id names=() out
    case $1 in
        nexus-pool3) names=("${POOL_MEMBERS[@]}") ;;
        nexus-key1) names=(default) ;;
        nexus-clients100) for id in "${CLIENTS_SENT[@]}"; do names+=("$(client_name "$id")"); done ;;
    esac
    printf -v out '%s / ' "${names[@]}"
    echo "${out% / }"
}

# drop_run KEY TARGET: forgets a run's figures (median_rounds then skips the round).
drop_run() {
    local k
    for k in reqs rps p50 p99 cpu user rss err; do
        unset "R[$1|$2|$k]"
    done
}

# After a W4 run ~2 sockets per stream sit in TIME_WAIT for 60 s; each W4 target starts
# only once a previous W4's are gone (at most ~65 s), so every target gets the same clean
# port space. The few hundred that a W1-W3 or W5 run leaves are no crowd for ~28 000
# ephemeral ports, and waiting them out cost up to a minute of the 10-minute budget.
TIME_WAIT_CROWD=1000
settle_time_wait() {
    local i n ports
    ports=$(printf '%04X|%04X|%04X|%04X' "$UPORT" "$NEXUS_PORT" "$NGINX_PORT" "$PAIR_PORT")
    for ((i = 0; i < 70; i++)); do
        n=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
            | awk -v p="^($ports)\$" '$4 == "06" { split($2, l, ":"); split($3, r, ":"); if (l[2] ~ p || r[2] ~ p) n++ } END { print n + 0 }')
        (( n < TIME_WAIT_CROWD )) && return 0
        (( i == 0 )) && log "waiting for $n TIME_WAIT sockets to expire before the next W4 run"
        sleep 1
    done
}

w4_run() {
    local target=$1 out="$WORK/W4.$target.out"
    local events=$(( W4_SECS * 1000 / W4_INTERVAL_MS ))
    local base=0 peak=0 cur c0 c1
    if [[ ${#TARGET_PIDS[@]} -gt 0 ]]; then
        base=$(status_kb VmRSS "${TARGET_PIDS[@]}")
    fi
    c0=$(cpu_ticks "${TARGET_PIDS[@]}")
    timeout --foreground $((W4_SECS + W4_RAMP_MS / 1000 + 120)) "$STREAMS_BIN" --addr "127.0.0.1:$TARGET_PORT" \
        --streams "$W4_STREAMS" --threads "$WRK_THREADS" --ramp-ms "$W4_RAMP_MS" --timeout-secs $((W4_SECS + 90)) \
        --path "/v1/messages?events=$events&size=200&delay_ms=$W4_INTERVAL_MS" >"$out" 2>"$out.err" &
    local client=$!
    STARTED+=("$client")
    while alive "$client"; do
        if [[ ${#TARGET_PIDS[@]} -gt 0 ]]; then
            cur=$(status_kb VmRSS "${TARGET_PIDS[@]}")
            (( cur > peak )) && peak=$cur
        fi
        sleep 0.5
    done
    wait "$client" 2>/dev/null || true
    c1=$(cpu_ticks "${TARGET_PIDS[@]}")
    local line
    line=$(grep '^RESULT ' "$out" || true)
    if [[ -z "$line" ]]; then
        note "W4 against $target: the stream client printed no result: $(tail -n 3 "$out.err" | tr '\n' ' ')"
        FAILED=1
        return 0
    fi
    local k
    for k in streams completed failed peak_open ttfb_p99_ms gap_p99_ms gap_max_ms dur_max_ms failures secs; do
        R[W4|$target|$k]=$(kv "$line" "$k")
    done
    if [[ ${R[W4|$target|failed]} != 0 ]]; then
        FAILED=1
        note "W4 against $target: ${R[W4|$target|failed]} of ${R[W4|$target|streams]} streams failed ($(grep '^  failed' "$out" | sed 's/^ *//' | tr '\n' ';'))"
    fi
    if [[ ${#TARGET_PIDS[@]} -gt 0 ]]; then
        R[W4|$target|rss_base]=$(awk -v k="$base" 'BEGIN { printf "%.1f", k / 1024 }')
        R[W4|$target|rss_peak]=$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')
        R[W4|$target|kib_per_stream]=$(awk -v p="$peak" -v b="$base" -v n="${R[W4|$target|peak_open]}" \
            'BEGIN { if (n > 0) printf "%.1f", (p - b) / n; else print "-" }')
        R[W4|$target|cpu_s]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
    fi
    log "W4 $target: $(cat "$out" | head -n 3 | tr '\n' ' ')"
}

# ---------------------------------------------------------------- paired slices
# This machine's throughput swings by up to ±20 % from one second to the next (other guests
# on the host), so runs of 10 s taken one after the other cannot tell a variant that costs
# 3 % from its baseline. So each pair below also runs side by side: both processes up at
# once (each with a ledger file of its own), 1 s of load on each in turn (A then B, then B
# then A, …), and the ratio of each two neighbouring slices kept. What the two slices of a
# ratio share, the machine's mood of that moment, cancels; the median of PAIR_SLICES ratios,
# with the middle half of them, goes into the report. Between slices the ledger's writer
# finishes the rows of the slice before (ledger_settled): that last batch, up to ~0.1 s of
# rows, is the one part of a ledger's cost these ratios leave out.
PAIRS=("nexus nexus-nodb" "nexus-pool3 nexus-key1" "nexus-clients100 nexus")
declare -A SLOT   # SLOT[a|port] …: the two processes of a pair (see use_slot)

# keep_slot NAME, use_slot NAME: saves the current target's process as NAME; makes NAME's
# the current one (what wrk, check_served and stop_target act on).
keep_slot() {
    SLOT[$1|port]=$TARGET_PORT
    SLOT[$1|main]=$TARGET_MAIN
    SLOT[$1|log]=$TARGET_LOG
}
use_slot() {
    TARGET_PORT=${SLOT[$1|port]}
    TARGET_MAIN=${SLOT[$1|main]}
    TARGET_PIDS=("$TARGET_MAIN")
    TARGET_LOG=${SLOT[$1|log]}
}

# ledger_settled: waits (at most 3 s) until the current nexus's ledger has written the
# rows of the load it just had: its row count unchanged over 150 ms, longer than the
# writer gathers a batch. Else the writer would write them during the other process's
# next slice, and bill it for them.
ledger_settled() {
    local i before="" now
    for ((i = 0; i < 20; i++)); do
        now=$(metric "$(nexus_metrics)" nexus_ledger_rows_total)
        [[ -n $now && $now == "$before" ]] && return 0
        before=$now
        sleep 0.15
    done
}

# quartiles VALUES…: the lower quartile, the median and the upper quartile, or "- - -".
quartiles() {
    printf '%s\n' "$@" | awk '$1 != "" && $1 != "-" { print $1 + 0 }' | sort -g | awk '
        { v[n++] = $1 }
        function q(p,   x, i) { x = p * (n - 1); i = int(x); return v[i] + (x - i) * (v[i + 1 < n ? i + 1 : i] - v[i]) }
        END { if (n == 0) print "- - -"; else printf "%.6f %.6f %.6f\n", q(0.25), q(0.5), q(0.75) }'
}

# paired_slices W CONNS THREADS QUERY STREAM BODY_BYTES SHAPE: every pair of PAIRS whose two
# targets are in the run; the ratios go to R[W|A/B|pair_q1, pair, pair_q3, pair_n].
paired_slices() {
    local w=$1 conns=$2 threads=$3 query=$4 stream=$5 body=$6 shape=$7
    local pair a b i s t out ratios key="$w.pair" label="$w paired slices"
    (( PAIR_SLICES > 0 )) || return 0
    for pair in "${PAIRS[@]}"; do
        read -r a b <<<"$pair"
        has "$TARGETS" "$a" && has "$TARGETS" "$b" || continue
        log "$label: $a beside $b, $PAIR_SLICES × 1 s on each"
        start_target "$a" 1024 "$NEXUS_PORT" "$WORK/pair.$w.$a"
        keep_slot a
        start_target "$b" 1024 "$PAIR_PORT" "$WORK/pair.$w.$b"
        keep_slot b
        declare -A name=([a]=$a [b]=$b)
        for s in a b; do
            use_slot "$s"
            lua_env "${name[$s]}" "$query" "$stream" "$body" "$shape"
            env "${LUA_ENV[@]}" timeout --foreground $((WARMUP + 30)) wrk -t"$threads" -c"$conns" -d"${WARMUP}s" \
                -s "$ROOT/bench/wrk/messages.lua" "http://127.0.0.1:$TARGET_PORT" >/dev/null 2>&1 || true
            R[$key|${name[$s]}|reqs]=0
        done
        ratios=()
        for ((i = 1; i <= PAIR_SLICES; i++)); do
            for s in $( (( i % 2 )) && echo a b || echo b a ); do
                use_slot "$s"
                t=${name[$s]}
                out="$WORK/$w.s$i.$t.wrk"
                lua_env "$t" "$query" "$stream" "$body" "$shape"
                env "${LUA_ENV[@]}" timeout --foreground 30 wrk -t"$threads" -c"$conns" -d1s --timeout 10s \
                    -s "$ROOT/bench/wrk/messages.lua" "http://127.0.0.1:$TARGET_PORT" >"$out" 2>&1 || true
                wrk_summary "$out" "$w.s$i" "$t" "$label $i" || continue
                R[$key|$t|reqs]=$(( ${R[$key|$t|reqs]} + ${R[$w.s$i|$t|reqs]} ))
                [[ $t == nexus-nodb ]] || ledger_settled
            done
            ratios+=("$(div "${R[$w.s$i|$a|rps]:-}" "${R[$w.s$i|$b|rps]:-}")")
        done
        # Both must have done the work measured (pool members, clients, every ledger row).
        local ok=1
        for s in a b; do
            use_slot "$s"
            check_served "$key" "${name[$s]}" "$label"
            [[ -n "${R[$key|${name[$s]}|reqs]:-}" ]] || ok=0
            stop_target "${name[$s]}" "$label"
            rm -rf "$WORK/pair.$w.${name[$s]}"
        done
        if (( ok )); then
            read -r "R[$w|$a/$b|pair_q1]" "R[$w|$a/$b|pair]" "R[$w|$a/$b|pair_q3]" < <(quartiles "${ratios[@]}")
            R[$w|$a/$b|pair_n]=$(printf '%s\n' "${ratios[@]}" | grep -c '^[0-9]' || true)
            log "$label: $a ÷ $b req/s, median of ${R[$w|$a/$b|pair_n]} slices $(fmt "${R[$w|$a/$b|pair]}" 3) (middle half $(fmt "${R[$w|$a/$b|pair_q1]}" 3)–$(fmt "${R[$w|$a/$b|pair_q3]}" 3))"
        fi
        alive "$MOCK_PID" || die "the mock upstream died during $label"
    done
}

# ---------------------------------------------------------------- the workloads
#            name  conns threads query                            stream body    shape
WORKLOADS=(
    "W1 64 $WRK_THREADS - 0 300 chat"
    "W2 64 $WRK_THREADS ?events=30&size=200&delay_ms=0 1 300 chat"
    "W1-tls 64 $WRK_THREADS - 0 300 chat"
    "W2-tls 64 $WRK_THREADS ?events=30&size=200&delay_ms=0 1 300 chat"
    "W3 16 $WRK_THREADS ?events=200&size=200&delay_ms=0 1 262144 claude-code"
    "W5 1 1 - 0 300 chat"
)
DESCR_W1="small JSON: 300 B POST, ~600 B JSON response, 64 connections"
DESCR_W2="SSE: 300 B POST, 30 text events of 200 B (~6.7 KB), 64 connections"
DESCR_W3="Claude-Code-like: 256 KB POST, 200-event SSE response (~41 KB), 16 connections"
DESCR_W5="latency: W1 on 1 connection"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_mock
log "mock upstream on $UPORT; workers $WORKERS; ${SECS}s per run after ${WARMUP}s warm-up"

IFS=',' read -r -a TARGET_LIST <<<"$TARGETS"
REVERSED_LIST=()
for ((i = ${#TARGET_LIST[@]} - 1; i >= 0; i--)); do
    REVERSED_LIST+=("${TARGET_LIST[i]}")
done
# round_order N: the targets in round N's order: odd rounds as given, even rounds reversed,
# so that over two rounds every target has the same mean position (no target always first).
round_order() {
    if (( $1 % 2 == 1 )); then echo "${TARGET_LIST[*]}"; else echo "${REVERSED_LIST[*]}"; fi
}

# w12_only TARGET: the floor and nexus with one setting changed calibrate the hot path
# against nexus at its defaults: they run in W1 and W2 only.
w12_only() { [[ $1 == floor || $1 == nexus-* ]]; }

# W4 leaves ~2 sockets per stream in TIME_WAIT for 60 s, and each W4 target starts only
# once they are gone (settle_time_wait). So W4's targets run one at a time after W2, W3
# and W5, and those workloads' runs fill the wait; W1 and W2 run first, on a clean machine.
W4_PENDING=()
if has "$ONLY" W4; then
    for target in "${TARGET_LIST[@]}"; do
        w12_only "$target" || W4_PENDING+=("$target")
    done
fi
w4_next() {
    (( ${#W4_PENDING[@]} > 0 )) || return 0
    # Plain HTTP, whichever workload's turn it follows (W1-tls or W2-tls with --tls).
    local TLS_RUN=0
    local target=${W4_PENDING[0]}
    W4_PENDING=("${W4_PENDING[@]:1}")
    log "W4 $target: $W4_STREAMS streams, one event per ${W4_INTERVAL_MS} ms for ${W4_SECS}s, ramp ${W4_RAMP_MS} ms"
    settle_time_wait
    # nginx counts its listener and idle upstream keep-alive connections too: with only
    # 200 to spare, one worker logged "worker_connections are not enough" and reset 516
    # of 9750 streams.
    start_target "$target" $(( 2 * W4_STREAMS + 500 ))
    w4_run "$target"
    stop_target "$target" W4
    alive "$MOCK_PID" || die "the mock upstream died during W4"
}

# W1, W2, W3 and W5 run in rounds (every target once per round, fresh each time; see
# rounds_of) and report the median of each figure.
for spec in "${WORKLOADS[@]}"; do
    read -r w conns threads query stream body shape <<<"$spec"
    # W1-tls and W2-tls come with --tls, when W1 (W2) is in the run.
    has "$ONLY" "${w%-tls}" || continue
    TLS_RUN=0
    if [[ $w == *-tls ]]; then
        [[ $WITH_TLS == 1 ]] || continue
        TLS_RUN=1
    fi
    [[ $query == - ]] && query=""
    rounds=$(rounds_of "$w")
    for ((round = 1; round <= rounds; round++)); do
        if (( rounds > 1 )); then
            read -r -a order <<<"$(round_order "$round")"
            label="$w round $round"
            tag=$round
            log "$label of $rounds: ${order[*]}"
        else
            order=("${TARGET_LIST[@]}")
            label=$w
            tag=""
        fi
        for target in "${order[@]}"; do
            w12_only "$target" && [[ $w != W1 && $w != W2 ]] && continue
            # The mock and the floor speak no TLS: HTTPS is nexus against nginx.
            [[ $TLS_RUN == 1 && $target != nexus && $target != nginx ]] && continue
            start_target "$target"
            wrk_run "$w" "$target" "$conns" "$threads" "$query" "$stream" "$body" "$shape" ${tag:+"$tag"}
            check_served "$w" "$target" "$label" ${tag:+"$tag"}
            # oha is a second opinion, once per target: in the first round only.
            if [[ $WITH_OHA == 1 && ( $w == W1 || $w == W2 ) && $round == 1 ]]; then
                oha_run "$w" "$target" "$conns" "$query" "$stream" "$body"
            fi
            stop_target "$target" "$label"
        done
        alive "$MOCK_PID" || die "the mock upstream died during $label"
    done
    if (( rounds > 1 )); then
        for target in "${TARGET_LIST[@]}"; do
            median_rounds "$w" "$target"
        done
    fi
    if [[ $w == W1 || $w == W2 ]]; then
        paired_slices "$w" "$conns" "$threads" "$query" "$stream" "$body" "$shape"
    fi
    [[ $w == W1 ]] || w4_next
done
TLS_RUN=0

while (( ${#W4_PENDING[@]} > 0 )); do
    w4_next
done

# ---------------------------------------------------------------- report
pos_ratio() {   # a / b when both are positive (an added latency within noise is not), else —
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a + 0 <= 0 || b + 0 <= 0) print "—"; else printf "%.2f", a / b }'
}
ratio() {   # ratio KEY-A KEY-B with 2 decimals, or —
    local r
    r=$(div "${R[$1]:-}" "${R[$2]:-}")
    fmt "$r" 2
}

# w12_ratio_table A B: A's W1 and W2 req/s over B's, from the paired slices (the median
# and the middle half of the slices' ratios) and from the rounds (the ratio of the medians
# and the lowest and highest ratio of a single round), and CPU per request from the rounds.
w12_ratio_table() {
    local a=$1 b=$2 w p
    echo "| workload | req/s, paired slices | (middle half) | req/s, rounds | (rounds) | CPU/req, rounds | (rounds) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for w in W1 W2; do
        has "$ONLY" "$w" || continue
        p="$w|$a/$b"
        echo "| $w | $(fmt "${R[$p|pair]:-}" 3) | $(fmt "${R[$p|pair_q1]:-}" 3)–$(fmt "${R[$p|pair_q3]:-}" 3) | $(ratio "$w|$a|rps" "$w|$b|rps") | $(round_range "$w" rps "$a" "$b") | $(ratio "$w|$a|cpu" "$w|$b|cpu") | $(round_range "$w" cpu "$a" "$b") |"
    done
    if (( PAIR_SLICES > 0 )); then
        echo
        echo "Paired slices: both processes up at once, 1 s of the workload on each in turn, $PAIR_SLICES times (${R[W1|$a/$b|pair_n]:-0} ratios in W1, ${R[W2|$a/$b|pair_n]:-0} in W2): the two slices of one ratio share the machine's moment, so their ratio is far steadier than that of two runs taken a minute apart. Each slice's last batch of ledger rows (up to ~0.1 s of them) is written before the next slice starts, outside the ratio."
    fi
}

# served_note TARGET WHAT: what check_served found after each run of TARGET.
served_note() {
    [[ -n "${SERVED[$1]:-}" ]] || return 0
    echo
    echo "$2 ($(served_who "$1")), as nexus's /metrics counted them after each run (warm-up included; nexus counted no error on $WRK_DOMAIN, so no request was refused): ${SERVED[$1]}."
}

round_range() {   # round_range W METRIC TARGET-A TARGET-B: lowest–highest A/B over the rounds
    local w=$1 m=$2 a=$3 b=$4 r vals=()
    for ((r = 1; r <= ROUNDS; r++)); do
        vals+=("$(div "${R[$w.r$r|$a|$m]:-}" "${R[$w.r$r|$b|$m]:-}")")
    done
    printf '%s\n' "${vals[@]}" | awk '$1 != "" && $1 != "-" { v = $1 + 0; if (n++ == 0 || v < lo) lo = v; if (n == 1 || v > hi) hi = v }
        END { if (n < 2) print "—"; else printf "%.2f–%.2f", lo, hi }'
}

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[[ -z "$cpu_model" ]] && cpu_model=$(uname -m)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    commit="$commit (with uncommitted changes in src/ or Cargo.*)"
fi

report() {
    echo "# nexus benchmark results"
    echo
    echo "Written by \`$COMMAND\` on $(date -u '+%Y-%m-%d %H:%M UTC'). How to read it: [README.md](README.md)."
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| CPU | $cpu_model |"
    echo "| cores | $(nproc) (load generator, mock upstream and proxy share them) |"
    echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
    echo "| kernel | $(uname -r) |"
    echo "| nexus | commit $commit, \`-w $WORKERS\`, $(grep -h -o 'driver [^,]*' "$WORK"/nexus.*.log 2>/dev/null | head -n 1 || echo 'driver ?') |"
    echo "| nginx | $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //') \`worker_processes $WORKERS\` |"
    echo "| wrk | $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}') |"
    # Which workloads of this run ran in rounds (their figures are medians).
    local rounds_note="" w13="" w
    for w in W1 W2 W3; do
        if has "$ONLY" "$w"; then w13+="${w13:+, }$w"; fi
    done
    if (( ROUNDS > 1 )) && [[ -n $w13 ]]; then rounds_note="; $w13: $ROUNDS rounds"; fi
    if (( W5_ROUNDS > 1 )) && has "$ONLY" W5; then
        rounds_note+="; W5: $W5_ROUNDS rounds of ${W5_SECS} s, warmed up as long"
    fi
    if [[ -n $rounds_note ]]; then rounds_note+="; medians reported"; fi
    echo "| runs | ${SECS} s each after ${WARMUP} s warm-up${rounds_note}; open-file limit $NOFILE |"
    echo "| load average | $LOAD_BEFORE (1, 5, 15 min) before the runs; well above 0 means something else was using the cores |"
    echo "| duration | $((SECONDS / 60)) min $((SECONDS % 60)) s from start to this report, installs and build included |"
    echo
    echo "## Throughput, latency, cost"
    echo
    echo "CPU and peak RSS are the proxy's (nginx: summed over its workers); \`direct\` is the mock upstream alone."
    echo "*user %* is the share of that CPU spent in user space (the proxy's own code, its runtime and libc); the rest is the kernel."
    echo
    echo "| workload | target | req/s | p50 ms | p99 ms | CPU µs/req | user % | peak RSS MiB | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    local w t
    for w in W1 W2 W3 W5; do
        has "$ONLY" "$w" || continue
        for t in "${TARGET_LIST[@]}"; do
            [[ -n "${R[$w|$t|rps]:-}" ]] || continue
            echo "| $w | $t | $(fmt "${R[$w|$t|rps]}" 0) | $(fmt "${R[$w|$t|p50]}" 2) | $(fmt "${R[$w|$t|p99]}" 2) | $(fmt "${R[$w|$t|cpu]}" 1) | $(fmt "${R[$w|$t|user]:-}" 1) | $(fmt "${R[$w|$t|rss]}" 1) | ${R[$w|$t|err]} |"
        done
    done
    echo
    echo "W1 $DESCR_W1. W2 $DESCR_W2. W3 $DESCR_W3. W5 $DESCR_W5."
    if [[ -n $rounds_note ]]; then
        echo
        echo "A workload run in rounds reports each figure as its median over the rounds (with 2 rounds: the mean of the two), errors summed; each round's figures are under *Rounds*."
    fi
    if has "$TARGETS" nexus && has "$TARGETS" nginx; then
        echo
        echo "## nexus / nginx"
        echo
        echo "Above 1 is better for nexus in req/s, worse in every other column."
        echo
        echo "| workload | req/s | p50 | p99 | CPU/req | peak RSS |"
        echo "|---|---:|---:|---:|---:|---:|"
        for w in W1 W2 W3 W5; do
            has "$ONLY" "$w" || continue
            echo "| $w | $(ratio "$w|nexus|rps" "$w|nginx|rps") | $(ratio "$w|nexus|p50" "$w|nginx|p50") | $(ratio "$w|nexus|p99" "$w|nginx|p99") | $(ratio "$w|nexus|cpu" "$w|nginx|cpu") | $(ratio "$w|nexus|rss" "$w|nginx|rss") |"
        done
        if has "$ONLY" W4; then
            echo "| W4 | — | — | — | CPU: $(ratio "W4|nexus|cpu_s" "W4|nginx|cpu_s") | per stream: $(ratio "W4|nexus|kib_per_stream" "W4|nginx|kib_per_stream") |"
        fi
    fi
    if [[ $WITH_TLS == 1 ]]; then
        echo
        echo "## HTTPS: W1 and W2 over TLS (--tls)"
        echo
        echo "nexus (TLS_CERT_FILE) and nginx (\`listen ssl\`) terminate TLS with the same generated certificate (ECDSA P-256); wrk keeps its 64 connections open, so this is mostly the cost of record encryption, with one handshake per connection. Negotiated, as \`openssl s_client\` sees it: $(for t in nexus nginx; do printf '%s %s; ' "$t" "${R[W1-tls|$t|tls]:-?}"; done)"
        echo
        echo "| workload | target | req/s | p50 ms | p99 ms | CPU µs/req | user % | peak RSS MiB | errors |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        for w in W1-tls W2-tls; do
            for t in nexus nginx; do
                [[ -n "${R[$w|$t|rps]:-}" ]] || continue
                echo "| $w | $t | $(fmt "${R[$w|$t|rps]}" 0) | $(fmt "${R[$w|$t|p50]}" 2) | $(fmt "${R[$w|$t|p99]}" 2) | $(fmt "${R[$w|$t|cpu]}" 1) | $(fmt "${R[$w|$t|user]:-}" 1) | $(fmt "${R[$w|$t|rss]}" 1) | ${R[$w|$t|err]} |"
            done
            [[ -n "${R[$w|nexus|rps]:-}" && -n "${R[$w|nginx|rps]:-}" ]] || continue
            echo "| $w | nexus / nginx | $(ratio "$w|nexus|rps" "$w|nginx|rps") | $(ratio "$w|nexus|p50" "$w|nginx|p50") | $(ratio "$w|nexus|p99" "$w|nginx|p99") | $(ratio "$w|nexus|cpu" "$w|nginx|cpu") | | $(ratio "$w|nexus|rss" "$w|nginx|rss") | |"
        done
    fi
    if has "$TARGETS" nexus && has "$TARGETS" floor && { has "$ONLY" W1 || has "$ONLY" W2; }; then
        echo
        echo "## nexus / floor"
        echo
        echo "nexus with all its work on against the bare relay (\`floor\`, below), from the same interleaved rounds: the median's ratio, and in brackets the lowest and highest ratio of a single round, so that a reader can tell a change from noise. Above 1 is better for nexus in req/s, worse in CPU/req."
        echo
        echo "| workload | req/s | (rounds) | CPU/req | (rounds) | nexus / nginx req/s | (rounds) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for w in W1 W2; do
            has "$ONLY" "$w" || continue
            echo "| $w | $(ratio "$w|nexus|rps" "$w|floor|rps") | $(round_range "$w" rps nexus floor) | $(ratio "$w|nexus|cpu" "$w|floor|cpu") | $(round_range "$w" cpu nexus floor) | $(ratio "$w|nexus|rps" "$w|nginx|rps") | $(round_range "$w" rps nexus nginx) |"
        done
    fi
    if [[ -n $rounds_note ]]; then
        echo
        echo "## Rounds"
        echo
        local r row vals head rule
        echo "Order: round 1: $(round_order 1 | sed 's/ /, /g'); round 2: $(round_order 2 | sed 's/ /, /g'); and so on (each round reverses the one before)."
        if (( ROUNDS > 1 )) && [[ -n $w13 ]]; then
            echo "Spread = (highest − lowest) ÷ median req/s."
            echo
            head="| workload | target |" rule="|---|---|"
            for ((r = 1; r <= ROUNDS; r++)); do head+=" req/s r$r |"; rule+="---:|"; done
            head+=" spread |"; rule+="---:|"
            for ((r = 1; r <= ROUNDS; r++)); do head+=" CPU µs/req r$r |"; rule+="---:|"; done
            echo "$head"
            echo "$rule"
            for w in W1 W2 W3; do
                has "$ONLY" "$w" || continue
                for t in "${TARGET_LIST[@]}"; do
                    [[ -n "${R[$w|$t|rps]:-}" ]] || continue
                    row="| $w | $t |"
                    vals=()
                    for ((r = 1; r <= ROUNDS; r++)); do
                        row+=" $(fmt "${R[$w.r$r|$t|rps]:-}" 0) |"
                        vals+=("${R[$w.r$r|$t|rps]:-}")
                    done
                    row+=" $(printf '%s\n' "${vals[@]}" | awk -v m="${R[$w|$t|rps]}" '$1 != "" { if (n++ == 0 || $1 + 0 < lo) lo = $1 + 0; if (n == 1 || $1 + 0 > hi) hi = $1 + 0 }
                        END { if (n < 2 || m + 0 <= 0) print "—"; else printf "%.1f %%", (hi - lo) / m * 100 }') |"
                    for ((r = 1; r <= ROUNDS; r++)); do
                        row+=" $(fmt "${R[$w.r$r|$t|cpu]:-}" 1) |"
                    done
                    echo "$row"
                done
            done
        fi
        if (( W5_ROUNDS > 1 )) && has "$ONLY" W5; then
            echo
            echo "W5, p99 ms of each round (a stall of the machine shows as one round far above the others):"
            echo
            head="| target |" rule="|---|"
            for ((r = 1; r <= W5_ROUNDS; r++)); do head+=" r$r |"; rule+="---:|"; done
            echo "$head"
            echo "$rule"
            for t in "${TARGET_LIST[@]}"; do
                [[ -n "${R[W5|$t|rps]:-}" ]] || continue
                row="| $t |"
                for ((r = 1; r <= W5_ROUNDS; r++)); do
                    row+=" $(fmt "${R[W5.r$r|$t|p99]:-}" 2) |"
                done
                echo "$row"
            done
        fi
    fi
    if has "$TARGETS" floor && { has "$ONLY" W1 || has "$ONLY" W2; }; then
        echo
        echo "## The floor"
        echo
        echo "\`floor\` is bench/floor_relay.rs: one upstream connection per client, bytes forwarded as received, no accounting, credentials, header rewriting, timeouts or error answers, on the same io_uring setup as nexus. It shows what the kernel's loopback TCP and the runtime cost on this machine before any proxy work: a target below the floor's ratio cannot be met by any relay here."
        echo
        echo "| workload | floor / nginx req/s | floor / nginx CPU/req | nexus / floor CPU/req |"
        echo "|---|---:|---:|---:|"
        for w in W1 W2; do
            has "$ONLY" "$w" || continue
            echo "| $w | $(ratio "$w|floor|rps" "$w|nginx|rps") | $(ratio "$w|floor|cpu" "$w|nginx|cpu") | $(ratio "$w|nexus|cpu" "$w|floor|cpu") |"
        done
    fi
    if has "$ONLY" W5 && has "$TARGETS" direct; then
        echo
        echo "## W5: latency added over direct (1 connection)"
        echo
        echo "| target | p50 added µs | p99 added µs |"
        echo "|---|---:|---:|"
        for t in "${TARGET_LIST[@]}"; do
            [[ $t == direct || -z "${R[W5|$t|p50]:-}" ]] && continue
            echo "| $t | $(fmt "$(awk -v a="${R[W5|$t|p50]}" -v b="${R[W5|direct|p50]:-}" 'BEGIN { if (b == "") print "-"; else print (a - b) * 1000 }')" 0) | $(fmt "$(awk -v a="${R[W5|$t|p99]}" -v b="${R[W5|direct|p99]:-}" 'BEGIN { if (b == "") print "-"; else print (a - b) * 1000 }')" 0) |"
        done
        if has "$TARGETS" nexus && has "$TARGETS" nginx; then
            local an bn
            an=$(sub "${R[W5|nexus|p50]:-}" "${R[W5|direct|p50]:-}")
            bn=$(sub "${R[W5|nginx|p50]:-}" "${R[W5|direct|p50]:-}")
            local ap bp
            ap=$(sub "${R[W5|nexus|p99]:-}" "${R[W5|direct|p99]:-}")
            bp=$(sub "${R[W5|nginx|p99]:-}" "${R[W5|direct|p99]:-}")
            echo "| nexus / nginx | $(pos_ratio "$an" "$bn") | $(pos_ratio "$ap" "$bp") |"
        fi
    fi
    if has "$ONLY" W4; then
        echo
        echo "## W4: open streams"
        echo
        echo "$W4_STREAMS concurrent SSE streams (opened over ${W4_RAMP_MS} ms), each one 200 B event per ${W4_INTERVAL_MS} ms for ${W4_SECS} s, read to the end by \`open_streams\`."
        echo "RSS per stream = (peak RSS during the run − RSS before it) ÷ peak open streams."
        echo
        echo "| target | completed | failed | peak open | RSS before MiB | RSS peak MiB | KiB / stream | CPU s | first byte p99 ms | longest pause p99 ms | slowest stream s |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for t in "${TARGET_LIST[@]}"; do
            [[ -n "${R[W4|$t|streams]:-}" ]] || continue
            echo "| $t | ${R[W4|$t|completed]} / ${R[W4|$t|streams]} | ${R[W4|$t|failed]} | ${R[W4|$t|peak_open]} | $(fmt "${R[W4|$t|rss_base]:-}" 1) | $(fmt "${R[W4|$t|rss_peak]:-}" 1) | $(fmt "${R[W4|$t|kib_per_stream]:-}" 1) | $(fmt "${R[W4|$t|cpu_s]:-}" 2) | $(fmt "${R[W4|$t|ttfb_p99_ms]}" 1) | $(fmt "${R[W4|$t|gap_p99_ms]}" 1) | $(fmt "$(awk -v v="${R[W4|$t|dur_max_ms]}" 'BEGIN { print v / 1000 }')" 1) |"
        done
    fi
    if [[ $WITH_OHA == 1 ]]; then
        echo
        echo "## oha (second opinion on W1, W2)"
        echo
        echo "| workload | target | req/s | p50 ms | p99 ms | CPU µs/req | success |"
        echo "|---|---|---:|---:|---:|---:|---:|"
        for w in W1 W2; do
            has "$ONLY" "$w" || continue
            for t in "${TARGET_LIST[@]}"; do
                echo "| $w | $t | $(fmt "${R[$w-oha|$t|rps]:-}" 0) | $(fmt "${R[$w-oha|$t|p50]:-}" 2) | $(fmt "${R[$w-oha|$t|p99]:-}" 2) | $(fmt "${R[$w-oha|$t|cpu]:-}" 1) | ${R[$w-oha|$t|ok]:-—} |"
            done
        done
        echo
        echo "| workload | nexus / floor req/s | nexus / floor CPU/req | nexus / nginx req/s | nexus / nginx CPU/req |"
        echo "|---|---:|---:|---:|---:|"
        for w in W1 W2; do
            has "$ONLY" "$w" || continue
            echo "| $w | $(ratio "$w-oha|nexus|rps" "$w-oha|floor|rps") | $(ratio "$w-oha|nexus|cpu" "$w-oha|floor|cpu") | $(ratio "$w-oha|nexus|rps" "$w-oha|nginx|rps") | $(ratio "$w-oha|nexus|cpu" "$w-oha|nginx|cpu") |"
        done
    fi
    if has "$TARGETS" nexus && has "$TARGETS" nexus-nodb && { has "$ONLY" W1 || has "$ONLY" W2; }; then
        echo
        echo "## The ledger's cost"
        echo
        echo "nexus at its defaults (the SQLite ledger writing a row per request) against the same build with \`NEXUS_DB=off\`. Issue 19 asks for req/s within 5 %."
        echo
        w12_ratio_table nexus nexus-nodb
        if [[ -n "${LEDGER_WRITER:-}" ]]; then
            echo
            echo "The writer thread alone (\`bench/ledger_writer.rs\`: the SQLite engine writing W1-like rows in the writer's batches, one core, no other load):"
            echo
            echo '```'
            echo "$LEDGER_WRITER"
            echo '```'
        fi
    fi
    if has "$TARGETS" nexus-key1 && has "$TARGETS" nexus-pool3 && { has "$ONLY" W1 || has "$ONLY" W2; }; then
        echo
        echo "## What a pool costs: nexus-pool3 ÷ nexus-key1"
        echo
        echo "nexus with the domain of wrk's requests ($WRK_DOMAIN) served by a pool file of ${#POOL_MEMBERS[@]} API-key members (${POOL_MEMBERS[*]}), against the same domain served by a file of one API key (nexus-key1). Above 1 is better for the pool in req/s, worse in CPU/req. The ratio holds what a pool adds: a member chosen per request, its rate-limit headers read, and (W2) a stream's first event read before its head is relayed, so that an overloaded stream could fail over. Issue 20 asks for req/s within 3 %."
        echo
        w12_ratio_table nexus-pool3 nexus-key1
        served_note nexus-pool3 "Requests each member sent upstream"
    fi
    if has "$TARGETS" nexus && has "$TARGETS" nexus-clients100 && { has "$ONLY" W1 || has "$ONLY" W2; }; then
        echo
        echo "## What named clients cost: nexus-clients100 ÷ nexus"
        echo
        echo "nexus with a \`CLIENTS_FILE\` of $CLIENT_COUNT named clients, each with a budget in dollars and in tokens in every window (5h, day, week, month) far above what the run spends, wrk's two threads each sending one client's key ($(served_who nexus-clients100)), against nexus at its defaults (no clients; its requests carry an \`x-api-key\` of the same length that nobody checks). Above 1 is better for the clients in req/s, worse in CPU/req. Issue 21 asks for req/s within 3 %."
        echo
        w12_ratio_table nexus-clients100 nexus
        served_note nexus-clients100 "Requests of each client"
    fi
    if [[ -n "${PARSERS:-}" ]]; then
        echo
        echo "## Usage parsers (one core, no I/O: \`bench/usage_throughput.rs\`)"
        echo
        echo '```'
        echo "$PARSERS"
        echo '```'
    fi
    echo
    echo "## Notes"
    echo
    if [[ ${#NOTES[@]} -eq 0 ]]; then
        echo "None: every run finished without errors, and no process logged a warning."
    else
        local n
        for n in "${NOTES[@]}"; do
            echo '```'
            echo "$n"
            echo '```'
        done
    fi
}

log "measuring the usage parsers"
PARSERS=$(timeout 120 "$PARSERS_BIN" 2>&1) || note "usage_throughput failed: $PARSERS"
log "measuring the ledger's writer"
LEDGER_WRITER=$(cd "$WORK" && timeout 120 "$LEDGER_BIN" 2>&1) || note "ledger_writer failed: $LEDGER_WRITER"
report >"$WORK/RESULTS.md"
# Keep the soak section (bench/soak.sh writes it; this script does not re-run it).
if [[ -f "$ROOT/bench/RESULTS.md" ]] && grep -q "<!-- soak:begin -->" "$ROOT/bench/RESULTS.md"; then
    { echo; sed -n '/<!-- soak:begin -->/,/<!-- soak:end -->/p' "$ROOT/bench/RESULTS.md"; } >>"$WORK/RESULTS.md"
fi
cp "$WORK/RESULTS.md" "$ROOT/bench/RESULTS.md"
echo
cat "$ROOT/bench/RESULTS.md"
echo
log "wrote bench/RESULTS.md"
if [[ $FAILED != 0 ]]; then
    log "some runs failed; see Notes"
    exit 1
fi
