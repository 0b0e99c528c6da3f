#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable for the same binary and
# load whatever else the machine is doing, so small changes to the request path can be judged.
#
#   bench/callgrind.sh [BINARY] [h1|h2]     (default: target/release/switchyard h1)
#
# Two nginx backends (bench/conf/nginx-backend.conf.tmpl) answer v1/v2; the proxy runs the
# harness's split (bench/conf/istio-split.yaml.tmpl) under callgrind, pinned to one core.
# h2load sends WARMUP requests, the counters are zeroed, then REQUESTS more are counted:
# HTTP/1.1 is `h2load --h1 -c16`, HTTP/2 is `h2load -c16 -m8` (h2c prior knowledge).
# Loopback only; every load run is bounded by its request count and an outer timeout.
# Needs: valgrind, nginx (nginx-light), h2load (nghttp2-client).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-target/release/switchyard}
MODE=${2:-h1}
WARMUP=${WARMUP:-5000}
REQUESTS=${REQUESTS:-20000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HOST_HEADER=${HOST_HEADER:-reviews.bench.svc.cluster.local}
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RUN_DIR=$(mktemp -d /tmp/callgrind.XXXXXX)
mkdir -p "$RUN_DIR/tmp"
V1_PORT=$(free_port); V2_PORT=$(free_port); PORT=$(free_port); ADMIN=$(free_port); METRICS=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

render() { # template out, with RNAME / RPORT for a backend
  sed -e "s#@RUN@#$RUN_DIR#g" -e "s#@V1PORT@#$V1_PORT#g" -e "s#@V2PORT@#$V2_PORT#g" \
      -e "s#@HOST@#$HOST_HEADER#g" -e "s#@PORT@#${RPORT:-0}#g" \
      -e "s#@BH2PORT@#$(free_port)#g" -e "s#@NAME@#${RNAME:-x}#g" "$1" > "$2"
}

for v in v1 v2; do
  RNAME=$v RPORT=$([[ $v == v1 ]] && echo "$V1_PORT" || echo "$V2_PORT") \
    render "$HERE/conf/nginx-backend.conf.tmpl" "$RUN_DIR/backend-$v.conf"
  setsid taskset -c "$LOAD_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/backend-$v.err" \
    -c "$RUN_DIR/backend-$v.conf" 2>/dev/null &
  PIDS+=($!)
done
render "$HERE/conf/istio-split.yaml.tmpl" "$RUN_DIR/istio-split.yaml"

setsid taskset -c "$PROXY_CPU" valgrind --tool=callgrind --collect-atstart=yes --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$RUN_DIR/callgrind.out" \
  "$BIN" run --config "$RUN_DIR/istio-split.yaml" --listen "127.0.0.1:$PORT" \
  --admin "127.0.0.1:$ADMIN" --metrics "127.0.0.1:$METRICS" >"$RUN_DIR/proxy.log" 2>&1 &
VG=$!
PIDS+=("$VG")

for _ in $(seq 1 300); do
  curl -s -m 1 -H "Host: $HOST_HEADER" "http://127.0.0.1:$PORT/" 2>/dev/null | grep -q '^v[12]' && break
  sleep 0.2
done
curl -s -m 2 -H "Host: $HOST_HEADER" "http://127.0.0.1:$PORT/" | grep -q '^v[12]' \
  || { echo "proxy did not come up; see $RUN_DIR/proxy.log" >&2; exit 1; }

load() { # requests
  local args=(-n "$1" -c16 -H ":authority: $HOST_HEADER")
  if [[ $MODE == h1 ]]; then args+=(--h1); else args+=(-m8); fi
  timeout 600 taskset -c "$LOAD_CPU" h2load "${args[@]}" "http://127.0.0.1:$PORT/" >"$RUN_DIR/h2load.$1.txt"
  grep -q " 0 failed, 0 errored" "$RUN_DIR/h2load.$1.txt" || { grep "requests:\|status codes" "$RUN_DIR/h2load.$1.txt" >&2; exit 1; }
}

load "$WARMUP"
callgrind_control -z "$VG" >/dev/null
load "$REQUESTS"
callgrind_control -d "$VG" >/dev/null
sleep 1
total=$(grep -h '^summary:\|^totals:' "$RUN_DIR"/callgrind.out.* 2>/dev/null | tail -1 | awk '{print $2}')
[[ -n $total ]] || { echo "no callgrind dump in $RUN_DIR" >&2; exit 1; }
echo "$MODE $(basename "$BIN"): $total instructions / $REQUESTS requests = $(( total / REQUESTS )) per request (run dir $RUN_DIR)"
