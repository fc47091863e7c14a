#!/usr/bin/env bash
# Soak: SOAK_SECS (default 600) of mixed load with injected faults against one nexus:
# normal JSON and SSE traffic (wrk), upstreams dying mid-stream, clients reading slowly,
# clients hanging up mid-stream, oversize requests. Samples nexus's RSS and open fds every
# 10 s, checks it never crashed and that RSS and fds return to their level afterwards,
# and writes the "Soak" section of bench/RESULTS.md. Not part of CI (it takes minutes).
#
#   bash bench/soak.sh                 # 10 minutes
#   SOAK_SECS=120 bash bench/soak.sh   # a shorter look
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SOAK_SECS:-600}
PORT=${SOAK_PORT_BASE:-18400}
WORKERS=${SOAK_WORKERS:-2}
WORK=$(mktemp -d /tmp/nexus-soak.XXXXXX)
PIDS=()

log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v wrk >/dev/null || die "wrk is missing (bash bench/run.sh installs it, or apt-get install wrk)"
command -v python3 >/dev/null || die "python3 is missing"

log "building (release)"
cargo build --release --locked --bin nexus --example mock_upstream >&2 || die "cargo build failed"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$TARGET_DIR/release/examples/mock_upstream" --port "$PORT" --workers "$WORKERS" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
env -i PATH="$PATH" UPSTREAM_URL="http://127.0.0.1:$PORT" CLAUDE_API_KEY=sk-ant-api03-soak \
    STATS_INTERVAL_SECS=0 NEXUS_LOG=warn CREDENTIALS_DIR="$WORK/credentials" \
    "$TARGET_DIR/release/nexus" -p $((PORT + 1)) -H 127.0.0.1 -w "$WORKERS" >"$WORK/nexus.log" 2>&1 &
NEXUS_PID=$!
PIDS+=($NEXUS_PID)
for _ in $(seq 100); do grep -q "listening on" "$WORK/nexus.log" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$WORK/nexus.log" || die "nexus did not start: $(cat "$WORK/nexus.log")"
URL="http://127.0.0.1:$((PORT + 1))/v1/messages"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$NEXUS_PID/status"; }
fds() { ls "/proc/$NEXUS_PID/fd" | wc -l; }
alive() { kill -0 "$NEXUS_PID" 2>/dev/null; }

log "warm-up (20 s of normal load), then the baseline"
wrk -t1 -c16 -d20s -s "$ROOT/bench/wrk/messages.lua" "$URL" >/dev/null 2>&1
sleep 5
BASE_RSS=$(rss_kib)
BASE_FDS=$(fds)
log "baseline: RSS ${BASE_RSS} KiB, ${BASE_FDS} fds"

log "soaking for ${SECS} s"
wrk -t1 -c8 -d"${SECS}s" -s "$ROOT/bench/wrk/messages.lua" "$URL" >"$WORK/wrk-json.out" 2>&1 &
LOAD=($!)
BENCH_QUERY="?events=30&size=200" BENCH_STREAM=1 wrk -t1 -c8 -d"${SECS}s" -s "$ROOT/bench/wrk/messages.lua" "$URL" >"$WORK/wrk-sse.out" 2>&1 &
LOAD+=($!)
for mode in "slow 4" "abort 4" "oversize 2" "dying 2"; do
    set -- $mode
    python3 "$ROOT/bench/soak_clients.py" "$1" $((PORT + 1)) "$SECS" "$2" >"$WORK/clients-$1.out" 2>&1 &
    LOAD+=($!)
done
PIDS+=("${LOAD[@]}")

PEAK_RSS=$BASE_RSS
PEAK_FDS=$BASE_FDS
SAMPLES="$WORK/samples.csv"
echo "seconds,rss_kib,fds" >"$SAMPLES"
started=$(date +%s)
while (( $(date +%s) - started < SECS )); do
    sleep 10
    alive || die "nexus died during the soak: $(tail -n 20 "$WORK/nexus.log")"
    r=$(rss_kib); f=$(fds)
    echo "$(( $(date +%s) - started )),$r,$f" >>"$SAMPLES"
    (( r > PEAK_RSS )) && PEAK_RSS=$r
    (( f > PEAK_FDS )) && PEAK_FDS=$f
done
for p in "${LOAD[@]}"; do wait "$p" || true; done
alive || die "nexus died during the soak"

log "load stopped; letting connections drain"
END_FDS=$(fds)
for _ in $(seq 60); do
    END_FDS=$(fds)
    (( END_FDS <= BASE_FDS )) && break
    sleep 1
done
END_RSS=$(rss_kib)
PANICS=$(grep -c "panicked" "$WORK/nexus.log" || true)
requests() { awk '/requests in/ { print $1 }' "$1"; }
errors() { awk '/Socket errors|Non-2xx/ { print }' "$1" | tr '\n' ' '; }

{
    echo "<!-- soak:begin -->"
    echo "## Soak"
    echo
    echo "\`SOAK_SECS=$SECS bash bench/soak.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), nexus \`-w $WORKERS\`, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'): normal load (wrk, 8 connections each of JSON and SSE) while hostile clients ran the whole time."
    echo
    echo "| what | figure |"
    echo "|---|---|"
    echo "| nexus alive at the end / panics logged | $(alive && echo yes || echo NO) / $PANICS |"
    echo "| RSS: baseline → peak → after | $((BASE_RSS / 1024)) MiB → $((PEAK_RSS / 1024)) MiB → $((END_RSS / 1024)) MiB |"
    echo "| open fds: baseline → peak → after | $BASE_FDS → $PEAK_FDS → $END_FDS |"
    echo "| JSON requests (wrk) | $(requests "$WORK/wrk-json.out") $(errors "$WORK/wrk-json.out")|"
    echo "| SSE requests (wrk) | $(requests "$WORK/wrk-sse.out") $(errors "$WORK/wrk-sse.out")|"
    for mode in slow abort oversize dying; do
        echo "| $mode clients | \`$(tail -n 1 "$WORK/clients-$mode.out")\` |"
    done
    echo
    echo "Samples every 10 s (seconds, RSS KiB, fds): $(tail -n +2 "$SAMPLES" | tr '\n' ' ')"
    echo "<!-- soak:end -->"
} >"$WORK/soak.md"

RESULTS="$ROOT/bench/RESULTS.md"
if [[ -f "$RESULTS" ]] && grep -q "<!-- soak:begin -->" "$RESULTS"; then
    sed -i '/<!-- soak:begin -->/,/<!-- soak:end -->/d' "$RESULTS"
fi
{ echo; cat "$WORK/soak.md"; } >>"$RESULTS"
cat "$WORK/soak.md"

(( PANICS == 0 )) || die "nexus logged a panic"
(( END_FDS <= BASE_FDS + 2 )) || die "open fds did not return to the baseline ($BASE_FDS → $END_FDS)"
log "done"
