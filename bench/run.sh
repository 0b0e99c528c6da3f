#!/usr/bin/env bash
# Side-by-side benchmark of HTTP proxies doing a 95/5 weighted split plus a
# header rule (X-User-Group: beta -> v2). Loopback (127.0.0.1) only.
#
#   bench/run.sh                      # peers only
#   bench/run.sh 'PROXY_CMD'          # peers + our proxy
#
# PROXY_CMD placeholders (also exported as env vars):
#   {PORT}   listen port                  $BENCH_PORT
#   {ADDR}   127.0.0.1:{PORT}             $BENCH_ADDR
#   {V1}     v1 backend 127.0.0.1:port    $BENCH_V1
#   {V2}     v2 backend 127.0.0.1:port    $BENCH_V2
#   {CONFIG} Istio YAML (ServiceEntry + WorkloadEntry + DestinationRule +
#            VirtualService) describing exactly that split  $BENCH_CONFIG
# e.g.  bench/run.sh 'target/release/switchyard run --config {CONFIG} --listen {ADDR}'
#
# See bench/README.md for every knob. Everything this script starts is
# stopped by PID (process group) on exit; nothing is killed by name.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OURS_CMD="${1:-${OURS_CMD:-}}"

# ---------------------------------------------------------------- knobs
CONNS=${CONNS:-64}                 # wrk connections (closed loop)
DURATION=${DURATION:-10}           # seconds per measured wrk run
WARMUP=${WARMUP:-2}                # seconds of warm-up before each measured run
WRK_THREADS=${WRK_THREADS:-1}      # wrk threads (all on LOAD_CPU)
REQ_TIMEOUT=${REQ_TIMEOUT:-2s}     # per-request timeout for wrk
PROXY_CPU=${PROXY_CPU:-0}          # core the proxy under test is pinned to
LOAD_CPU=${LOAD_CPU:-1}            # core for wrk/oha/h2load AND the two backends
BASE_PORT=${BASE_PORT:-28080}
PEERS=${PEERS:-"direct floor nginx haproxy caddy ours"}
FIXED_RATE=${FIXED_RATE:-1000}     # req/s for the open-loop latency phase (oha); 0 = skip
FIXED_CONNS=${FIXED_CONNS:-16}
HEADER_SECS=${HEADER_SECS:-2}      # seconds of X-User-Group: beta traffic (routing check)
H2=${H2:-0}                        # 1 = also run h2load (h2c prior knowledge) per peer
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-8}
HOST_HEADER=${HOST_HEADER:-reviews.bench.svc.cluster.local}
PINGORA_BIN=${PINGORA_BIN:-}
OURS_H2_PORT_SAME=${OURS_H2_PORT_SAME:-1}   # our proxy serves h2c on {PORT} (hyper-util auto)
WAIT_QUIET=${WAIT_QUIET:-0}       # >0: before each peer wait up to N s for both CPUs to be <15 % busy
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/proxy-bench.XXXXXX)}
RESULTS_MD=${RESULTS_MD:-$RUN_DIR/results.md}

V1_PORT=$((BASE_PORT + 1))
V2_PORT=$((BASE_PORT + 2))
V1=127.0.0.1:$V1_PORT
V2=127.0.0.1:$V2_PORT
declare -A PORT=( [direct]=$V1_PORT [nginx]=$((BASE_PORT + 10)) [haproxy]=$((BASE_PORT + 11))
                  [caddy]=$((BASE_PORT + 12)) [pingora]=$((BASE_PORT + 13)) [floor]=$((BASE_PORT + 14))
                  [ours]=$((BASE_PORT + 20)) )
NGINX_H2_PORT=$((BASE_PORT + 30))

mkdir -p "$RUN_DIR/tmp"
LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg)
LOG="$RUN_DIR/bench.log"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }

for t in wrk curl taskset; do command -v $t >/dev/null || { echo "missing $t (apt-get install wrk curl util-linux)" >&2; exit 2; }; done
HAVE_OHA=0; command -v oha >/dev/null && HAVE_OHA=1
HAVE_H2LOAD=0; command -v h2load >/dev/null && HAVE_H2LOAD=1
NCPU=$(nproc)
if (( PROXY_CPU >= NCPU || LOAD_CPU >= NCPU )); then echo "need CPUs $PROXY_CPU and $LOAD_CPU, have $NCPU" >&2; exit 2; fi

# ------------------------------------------------------- process control
STARTED=()   # PIDs (each is its own session/process-group leader)
LAST_PID=""
start_bg() { # name cpu cmd...   -> sets LAST_PID (no subshell, so STARTED stays accurate)
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" >"$RUN_DIR/$name.out" 2>&1 < /dev/null &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}
stop_pid() { # pid  (TERM the process group, then KILL after 5 s)
  local pid=$1 pg
  kill -0 "$pid" 2>/dev/null || return 0
  pg=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
  if [[ "$pg" == "$pid" ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    if [[ "$pg" == "$pid" ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local i
  for (( i=${#STARTED[@]}-1; i>=0; i-- )); do stop_pid "${STARTED[$i]}"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url expect-regex seconds
  local url=$1 re=$2 secs=${3:-15} body
  for _ in $(seq $((secs * 10))); do
    body=$(curl -s --max-time 1 -H "Host: $HOST_HEADER" "$url" 2>/dev/null || true)
    [[ "$body" =~ $re ]] && return 0
    sleep 0.1
  done
  return 1
}
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

render() { # template out
  sed -e "s#@RUN@#$RUN_DIR#g" -e "s#@V1@#$V1#g" -e "s#@V2@#$V2#g" \
      -e "s#@V1PORT@#$V1_PORT#g" -e "s#@V2PORT@#$V2_PORT#g" -e "s#@HOST@#$HOST_HEADER#g" \
      -e "s#@V1H2@#127.0.0.1:$((V1_PORT + 30))#g" \
      -e "s#@PORT@#${RPORT:-0}#g" -e "s#@H2PORT@#$NGINX_H2_PORT#g" -e "s#@BH2PORT@#$(( ${RPORT:-0} + 30 ))#g" -e "s#@NAME@#${RNAME:-x}#g" "$1" > "$2"
}

# ------------------------------------------------------- measurements
descendants() { local p; for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$p"; descendants "$p"; done; }
tree_pids() { echo "$1"; descendants "$1"; }
cpu_ticks() { # utime+stime of pid and its descendants
  local t=0 p s
  for p in $(tree_pids "$1"); do
    s=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    s=${s##*) }                       # drop "pid (comm) "
    set -- $s
    t=$(( t + ${12} + ${13} ))          # fields 14,15 of the full line
  done
  echo "$t"
}
hwm_kb() { # sum of VmHWM (peak RSS) over the tree
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmHWM:/{print $2}' /proc/"$p"/status 2>/dev/null || true)
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}
backend_count() { # port -> stub_status "requests" counter
  curl -s --max-time 2 "http://127.0.0.1:$1/__status" | awk 'NR==3{print $3}'
}
HZ=$(getconf CLK_TCK)
cpu_busy() { # cpu-index -> "busy_ticks total_ticks" from /proc/stat
  awk -v c="cpu$1" '$1==c{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat
}

wait_quiet() { # wait (bounded) until neither core is busy with foreign work
  (( WAIT_QUIET > 0 )) || return 0
  local deadline=$(( SECONDS + WAIT_QUIET )) a0 b0 a1 b1 x0 y0 x1 y1 u0 u1
  while (( SECONDS < deadline )); do
    read -r a0 b0 < <(cpu_busy "$PROXY_CPU"); read -r x0 y0 < <(cpu_busy "$LOAD_CPU")
    sleep 1
    read -r a1 b1 < <(cpu_busy "$PROXY_CPU"); read -r x1 y1 < <(cpu_busy "$LOAD_CPU")
    u0=$(( 100 * (a1 - a0) / (b1 - b0 + 1) )); u1=$(( 100 * (x1 - x0) / (y1 - y0 + 1) ))
    (( u0 < 15 && u1 < 15 )) && return 0
  done
  log "machine still busy (cpu$PROXY_CPU ${u0}%, cpu$LOAD_CPU ${u1}%) after ${WAIT_QUIET}s; measuring anyway"
}

kv() { # key line -> value
  local k=$1; shift
  sed -n "s/.*\b$k=\([^ ]*\).*/\1/p" <<<"$*"
}

wrk_run() { # url secs conns extra-args... -> RESULT line
  local url=$1 secs=$2 conns=$3; shift 3
  timeout $((secs + 15)) taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" \
    --timeout "$REQ_TIMEOUT" -H "Host: $HOST_HEADER" "$@" -s "$HERE/lua/report.lua" "$url" 2>&1 \
    | tee -a "$LOG" | grep '^RESULT' || echo "RESULT rps=0 errors=-1"
}

oha_run() { # url -> "p50 p90 p99 rps" in ms
  local url=$1 json
  json=$(timeout $((DURATION + 20)) taskset -c "$LOAD_CPU" oha --no-tui -z "${DURATION}s" -c "$FIXED_CONNS" \
          -q "$FIXED_RATE" --latency-correction -t 2s -H "Host: $HOST_HEADER" --output-format json "$url" 2>>"$LOG" || true)
  [[ -z "$json" ]] && { echo "- - - -"; return; }
  python3 - "$json" <<'PY' 2>>"$LOG" || echo "- - - -"
import json,sys
d=json.loads(sys.argv[1]); p=d.get("latencyPercentiles",{}); s=d.get("summary",{})
f=lambda v: "-" if v is None else "%.3f"%(v*1000)
print(f(p.get("p50")), f(p.get("p90")), f(p.get("p99")), "%.0f"%s.get("requestsPerSec",0))
PY
}

h2_once() { # url secs -> h2load output
  timeout $(($2 + 20)) taskset -c "$LOAD_CPU" h2load -t 1 -c "$H2_CONNS" -m "$H2_STREAMS" \
    -D "$2" -H ":authority: $HOST_HEADER" "$1" 2>&1 || true
}
h2_run() { # url pid -> "rps mean_ms errors cpu_us_per_req"
  # The warm-up is a run of its own (not h2load's --warm-up-time) so that the proxy's CPU time
  # and the requests counted cover the same window.
  local url=$1 pid=$2 out rps mean err done t0=0 t1=0 cpu="-"
  h2_once "$url" 1 >> "$LOG"
  [[ -n "$pid" ]] && t0=$(cpu_ticks "$pid")
  out=$(h2_once "$url" "$DURATION")
  [[ -n "$pid" ]] && t1=$(cpu_ticks "$pid")
  echo "$out" >> "$LOG"
  rps=$(sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  mean=$(awk '/time for request:/{print $6}' <<<"$out")
  err=$(sed -n 's/.* \([0-9]*\) failed, \([0-9]*\) errored.*/\1+\2/p' <<<"$out")
  done=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
  if [[ -n "$pid" && -n "$done" && "$done" != 0 ]]; then
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$done" 'BEGIN{printf "%.1f", 1e6*t/hz/n}')
  fi
  echo "${rps:--} ${mean:--} ${err:--} $cpu"
}

# ------------------------------------------------------------- backends
for p in $V1_PORT $V2_PORT; do port_free "$p" || { echo "port $p busy; set BASE_PORT" >&2; exit 2; }; done
for v in v1 v2; do
  RNAME=$v RPORT=$([[ $v == v1 ]] && echo $V1_PORT || echo $V2_PORT) render "$HERE/conf/nginx-backend.conf.tmpl" "$RUN_DIR/backend-$v.conf"
  start_bg "backend-$v" "$LOAD_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/backend-$v.err" -c "$RUN_DIR/backend-$v.conf"
done
wait_http "http://$V1/" '^v1' 10 || { echo "backend v1 failed; see $RUN_DIR" >&2; exit 1; }
wait_http "http://$V2/" '^v2' 10 || { echo "backend v2 failed; see $RUN_DIR" >&2; exit 1; }
log "backends up: v1=$V1 v2=$V2 (run dir $RUN_DIR)"

# Istio YAML for our proxy
render "$HERE/conf/istio-split.yaml.tmpl" "$RUN_DIR/istio-split.yaml"

# --------------------------------------------------------------- peers
start_peer() { # name -> sets LAST_PID, empty if the peer is unavailable
  local name=$1 port=${PORT[$1]} cmd
  LAST_PID=""
  case $name in
    nginx)
      RPORT=$port render "$HERE/conf/nginx-proxy.conf.tmpl" "$RUN_DIR/nginx-proxy.conf"
      start_bg nginx "$PROXY_CPU" nginx -p "$RUN_DIR" -e "$RUN_DIR/nginx-proxy.err" -c "$RUN_DIR/nginx-proxy.conf" ;;
    haproxy)
      command -v haproxy >/dev/null || return 0
      RPORT=$port render "$HERE/conf/haproxy.cfg.tmpl" "$RUN_DIR/haproxy.cfg"
      start_bg haproxy "$PROXY_CPU" haproxy -db -f "$RUN_DIR/haproxy.cfg" ;;
    floor)
      command -v haproxy >/dev/null || return 0
      RPORT=$port render "$HERE/conf/haproxy-tcp.cfg.tmpl" "$RUN_DIR/haproxy-tcp.cfg"
      start_bg floor "$PROXY_CPU" haproxy -db -f "$RUN_DIR/haproxy-tcp.cfg" ;;
    caddy)
      command -v caddy >/dev/null || return 0
      RPORT=$port render "$HERE/conf/Caddyfile.tmpl" "$RUN_DIR/Caddyfile"
      mkdir -p "$RUN_DIR/caddy-home"
      start_bg caddy "$PROXY_CPU" env GOMAXPROCS=1 HOME="$RUN_DIR/caddy-home" XDG_DATA_HOME="$RUN_DIR/caddy-home" \
        XDG_CONFIG_HOME="$RUN_DIR/caddy-home" caddy run --adapter caddyfile --config "$RUN_DIR/Caddyfile" ;;
    pingora)
      [[ -x "$PINGORA_BIN" ]] || return 0
      RPORT=$port render "$HERE/conf/pingora.yaml.tmpl" "$RUN_DIR/pingora.yaml"
      start_bg pingora "$PROXY_CPU" env LISTEN="127.0.0.1:$port" V1="$V1" V2="$V2" W1=95 \
        "$PINGORA_BIN" -c "$RUN_DIR/pingora.yaml" ;;
    ours)
      [[ -n "$OURS_CMD" ]] || return 0
      cmd=${OURS_CMD//\{PORT\}/$port}; cmd=${cmd//\{ADDR\}/127.0.0.1:$port}
      cmd=${cmd//\{V1\}/$V1}; cmd=${cmd//\{V2\}/$V2}; cmd=${cmd//\{CONFIG\}/$RUN_DIR/istio-split.yaml}
      echo "$cmd" > "$RUN_DIR/ours.cmd"
      start_bg ours "$PROXY_CPU" env BENCH_PORT="$port" BENCH_ADDR="127.0.0.1:$port" BENCH_V1="$V1" BENCH_V2="$V2" \
        BENCH_CONFIG="$RUN_DIR/istio-split.yaml" bash -c "exec $cmd" ;;
  esac
}

ms() { awk -v u="$1" 'BEGIN{if(u=="") print "-"; else printf "%.2f", u/1000}'; }
ROWS=()
ROWS2=()
H2ROWS=()
# CPU µs per request of the TCP floor, filled in at the report: peers may run before it
FLOOR_TOKEN="@ABOVE_FLOOR@"
BASE_RPS=""
BASE_FIX_P50=""; BASE_FIX_P90=""; BASE_FIX_P99=""
for peer in $PEERS; do
  port=${PORT[$peer]:-}
  [[ -n "$port" ]] || { log "unknown peer $peer"; continue; }
  pid=""
  wait_quiet
  if [[ $peer != direct ]]; then
    port_free "$port" || { log "$peer: port $port busy, skipped"; continue; }
    start_peer "$peer"; pid=$LAST_PID
    if [[ -z "$pid" ]]; then log "$peer: not available, skipped"; continue; fi
    if ! wait_http "http://127.0.0.1:$port/" '^v[12]' 20; then
      log "$peer: did not answer on $port; log: $RUN_DIR/$peer.out"; tail -5 "$RUN_DIR/$peer.out" >&2 || true
      stop_pid "$pid"; continue
    fi
  fi
  url="http://127.0.0.1:$port/"
  log "$peer: warm-up ${WARMUP}s"
  wrk_run "$url" "$WARMUP" "$CONNS" >/dev/null

  # --- closed-loop throughput + latency, split measured at the backends
  c1=$(backend_count $V1_PORT); c2=$(backend_count $V2_PORT)
  t0=0; [[ -n "$pid" ]] && t0=$(cpu_ticks "$pid")
  read -r pb0 pt0 < <(cpu_busy "$PROXY_CPU"); read -r lb0 lt0 < <(cpu_busy "$LOAD_CPU")
  log "$peer: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s $url"
  r=$(wrk_run "$url" "$DURATION" "$CONNS")
  t1=0; [[ -n "$pid" ]] && t1=$(cpu_ticks "$pid")
  read -r pb1 pt1 < <(cpu_busy "$PROXY_CPU"); read -r lb1 lt1 < <(cpu_busy "$LOAD_CPU")
  # foreign load on the proxy core = core busy minus the proxy's own CPU time
  noise=$(awk -v b=$((pb1 - pb0)) -v t=$((pt1 - pt0)) -v p=$((t1 - t0)) 'BEGIN{if(t>0){v=100*(b-p)/t; if(v<0)v=0; printf "%.0f", v} else print "-"}')
  loadbusy=$(awk -v b=$((lb1 - lb0)) -v t=$((lt1 - lt0)) 'BEGIN{if(t>0) printf "%.0f", 100*b/t; else print "-"}')
  d1=$(( $(backend_count $V1_PORT) - c1 - 1 )); d2=$(( $(backend_count $V2_PORT) - c2 - 1 ))
  rps=$(kv rps "$r"); reqs=$(kv requests "$r"); errs=$(kv errors "$r")
  rps=${rps:-0}; reqs=${reqs:-0}
  p50=$(kv p50_us "$r"); p90=$(kv p90_us "$r"); p99=$(kv p99_us "$r"); p999=$(kv p999_us "$r")
  [[ $peer == direct ]] && BASE_RPS=$rps
  ratio="-"; [[ -n "$BASE_RPS" && "$BASE_RPS" != 0 ]] && ratio=$(awk -v a="$rps" -v b="$BASE_RPS" 'BEGIN{printf "%.2f", a/b}')
  split="-"; cpu_req="-"; cpu_pct="-"; vcpu_k="-"
  if [[ $peer != direct ]]; then
    split=$(awk -v a="$d1" -v b="$d2" 'BEGIN{t=a+b; if(t>0) printf "%.2f/%.2f", 100*a/t, 100*b/t; else print "-"}')
    cpu_s=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN{printf "%.3f", t/hz}')
    cpu_pct=$(awk -v c="$cpu_s" -v d="$(kv duration_s "$r")" 'BEGIN{printf "%.0f", 100*c/d}')
    cpu_req=$(awk -v c="$cpu_s" -v n="$reqs" 'BEGIN{if(n>0) printf "%.1f", 1e6*c/n; else print "-"}')
    vcpu_k=$(awk -v c="$cpu_s" -v n="$reqs" 'BEGIN{if(n>0) printf "%.3f", 1000*c/n; else print "-"}')
  fi

  # --- header rule: every X-User-Group: beta request must reach v2
  hdr="-"
  if [[ $peer != direct && $peer != floor ]]; then
    c1=$(backend_count $V1_PORT); c2=$(backend_count $V2_PORT)
    wrk_run "$url" "$HEADER_SECS" 8 -H "X-User-Group: beta" >/dev/null
    h1=$(( $(backend_count $V1_PORT) - c1 - 1 )); h2=$(( $(backend_count $V2_PORT) - c2 - 1 ))
    hdr=$(awk -v a="$h1" -v b="$h2" 'BEGIN{t=a+b; if(t>0) printf "%.1f%% v2 (n=%d)", 100*b/t, t; else print "-"}')
  fi

  # --- open-loop fixed-rate latency (oha -q), like Istio's 1000 rps fortio runs
  fx50="-"; fx90="-"; fx99="-"; add90="-"; add99="-"
  if (( HAVE_OHA && FIXED_RATE > 0 )); then
    log "$peer: oha -q $FIXED_RATE -c $FIXED_CONNS -z ${DURATION}s"
    read -r fx50 fx90 fx99 fxrps < <(oha_run "$url")
    if [[ $peer == direct ]]; then BASE_FIX_P50=$fx50; BASE_FIX_P90=$fx90; BASE_FIX_P99=$fx99
    elif [[ -n "$BASE_FIX_P90" && "$fx90" != "-" ]]; then
      add90=$(awk -v a="$fx90" -v b="$BASE_FIX_P90" 'BEGIN{printf "%+.3f", a-b}')
      add99=$(awk -v a="$fx99" -v b="$BASE_FIX_P99" 'BEGIN{printf "%+.3f", a-b}')
    fi
  fi

  # --- optional HTTP/2 (h2c prior knowledge)
  if (( H2 && HAVE_H2LOAD )); then
    h2port=""
    case $peer in
      nginx) h2port=$NGINX_H2_PORT ;;
      direct) h2port=$((V1_PORT + 30)) ;;
      haproxy|caddy|pingora) h2port=$port ;;
      floor) h2port=$((port + 30)) ;;
      ours) (( OURS_H2_PORT_SAME )) && h2port=$port ;;
    esac
    if [[ -n "$h2port" ]]; then
      log "$peer: h2load -c $H2_CONNS -m $H2_STREAMS -D $DURATION"
      read -r h2rps h2mean h2err h2cpu < <(h2_run "http://127.0.0.1:$h2port/" "$pid")
      [[ $peer == floor ]] && FLOOR_H2_CPU=$h2cpu
      H2ROWS+=("| $peer | $h2rps | $h2mean | $h2err | $h2cpu | ${FLOOR_TOKEN}2:$h2cpu |")
    fi
  fi

  rss="-"; [[ -n "$pid" ]] && rss=$(awk -v k="$(hwm_kb "$pid")" 'BEGIN{printf "%.1f", k/1024}')
  [[ $peer == floor ]] && FLOOR_CPU=$cpu_req
  ROWS+=("| $peer | $(printf '%.0f' "$rps") | $ratio | $(ms "$p50") | $(ms "$p90") | $(ms "$p99") | $(ms "$p999") | ${errs:-0} | $cpu_req | ${FLOOR_TOKEN}1:$cpu_req | $vcpu_k | $cpu_pct | $loadbusy | $noise | $rss |")
  ROWS2+=("| $peer | $split | $hdr | $fx50 | $fx90 | $fx99 | $add90 | $add99 |")
  log "$peer: rps=$rps p50=${p50}us p99=${p99}us split=$split hdr=$hdr cpu/req=${cpu_req}us rss=${rss}MiB fixed=$fx50/$fx90/$fx99 ms"
  [[ -n "$pid" ]] && stop_pid "$pid"
done

# --------------------------------------------------------------- report
above_floor() { # row -> row with the token replaced by "µs above the floor"
  local row=$1 which val floor diff
  [[ $row =~ ${FLOOR_TOKEN}([12]):([^ ]*) ]] || { echo "$row"; return; }
  which=${BASH_REMATCH[1]}; val=${BASH_REMATCH[2]}
  floor=${FLOOR_CPU:-}; [[ $which == 2 ]] && floor=${FLOOR_H2_CPU:-}
  diff=$(awk -v a="$val" -v f="$floor" 'BEGIN{if(a ~ /^[0-9.]+$/ && f ~ /^[0-9.]+$/) printf "%+.1f", a-f; else print "-"}')
  echo "${row/${FLOOR_TOKEN}${which}:${val}/$diff}"
}
for i in "${!ROWS[@]}"; do ROWS[$i]=$(above_floor "${ROWS[$i]}"); done
for i in "${!H2ROWS[@]}"; do H2ROWS[$i]=$(above_floor "${H2ROWS[$i]}"); done
{
  echo "### $(date -u +'%Y-%m-%d %H:%M UTC') — $(uname -r), $NCPU CPUs, proxy on CPU $PROXY_CPU, wrk+backends on CPU $LOAD_CPU, loadavg at start: $LOADAVG0"
  echo
  echo "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --timeout $REQ_TIMEOUT (closed loop); split counted at the backends;"
  echo "header check = ${HEADER_SECS}s of X-User-Group: beta at 8 conns; fixed-rate = oha -q $FIXED_RATE -c $FIXED_CONNS -z ${DURATION}s (open loop, ms)."
  echo
  echo "| proxy | req/s | vs direct | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | proxy CPU µs/req | µs above the floor | vCPU per 1k rps | proxy core busy % | load core busy % | foreign load on proxy core % | peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "| proxy | split v1/v2 % (wrk run) | X-User-Group: beta → v2 | @${FIXED_RATE} rps p50 ms | p90 ms | p99 ms | added p90 vs direct | added p99 vs direct |"
  echo "|---|---|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS2[@]}"
  if (( ${#H2ROWS[@]} )); then
    echo
    echo "HTTP/2 cleartext (h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D$DURATION):"
    echo
    echo "| proxy | req/s | mean latency | failed+errored | proxy CPU µs/req | µs above the floor |"
    echo "|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${H2ROWS[@]}"
  fi
  echo
  echo "Versions: $(nginx -v 2>&1 | sed 's/.*\///'), nginx; $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}') haproxy; $(caddy version 2>/dev/null | awk '{print $1}') caddy; $(wrk --version 2>&1 | head -1 | awk '{print $2}') wrk; $(oha --version 2>/dev/null || echo 'no oha'); run dir $RUN_DIR"
} | tee "$RESULTS_MD"
