#!/usr/bin/env bash
# User and system CPU per request of one proxy, from /proc/PID/stat around a fixed count of
# requests (h2load -n N -c16 after 20,000 warm-up; HTTP/2 with -m8, HTTP/1.1 with --h1; the
# proxy pinned to CPU 0, load and the two nginx backends on CPU 1). User time is what a codec
# changes and moves little between runs; system time follows the machine.
#
#   bench/h2cpu.sh [BINARY|haproxy] [N] [h2|h1]
#       (default: target/release/switchyard 200000 h2; `haproxy` runs the harness's HAProxy
#        config, bench/conf/haproxy.cfg.tmpl, for HTTP/1.1 only)
#
# Loopback only; every load run is bounded by its request count and an outer timeout.
set -u
WHO=${1:-target/release/switchyard}; N=${2:-200000}; MODE=${3:-h2}
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/h2cpu.XXXX); mkdir -p "$D/tmp"
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
V1=$(fp); V2=$(fp); P=$(fp); HOST=reviews.bench.svc.cluster.local
for v in v1 v2; do port=$([[ $v == v1 ]] && echo "$V1" || echo "$V2")
  sed -e "s#@RUN@#$D#g" -e "s#@PORT@#$port#g" -e "s#@BH2PORT@#$(fp)#g" -e "s#@NAME@#$v#g" \
    bench/conf/nginx-backend.conf.tmpl > "$D/$v.conf"
  setsid taskset -c 1 nginx -p "$D" -e "$D/$v.err" -c "$D/$v.conf" 2>/dev/null & echo $! >> "$D/pids"
done
if [[ $WHO == haproxy ]]; then
  sed -e "s#@RUN@#$D#g" -e "s#@V1@#127.0.0.1:$V1#g" -e "s#@V2@#127.0.0.1:$V2#g" -e "s#@PORT@#$P#g" \
    -e "s#@HOST@#$HOST#g" bench/conf/haproxy.cfg.tmpl > "$D/haproxy.cfg"
  setsid taskset -c 0 haproxy -db -f "$D/haproxy.cfg" > "$D/proxy.log" 2>&1 & PX=$!
else
  sed -e "s#@V1PORT@#$V1#g" -e "s#@V2PORT@#$V2#g" -e "s#@HOST@#$HOST#g" \
    bench/conf/istio-split.yaml.tmpl > "$D/cfg.yaml"
  setsid taskset -c 0 "$WHO" run --config "$D/cfg.yaml" --listen "127.0.0.1:$P" > "$D/proxy.log" 2>&1 & PX=$!
fi
sleep 1.5
args=(-c16 -H ":authority: $HOST")
if [[ $MODE == h1 ]]; then args+=(--h1); else args+=(-m8); fi
taskset -c 1 timeout 60 h2load -n 20000 "${args[@]}" "http://127.0.0.1:$P/" > /dev/null
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$PX/stat")
taskset -c 1 timeout 120 h2load -n "$N" "${args[@]}" "http://127.0.0.1:$P/" > "$D/h2load.txt"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PX/stat")
rps=$(awk '/finished in/{print $4}' "$D/h2load.txt")
ok=$(grep -o "[0-9]* succeeded" "$D/h2load.txt")
tck=$(getconf CLK_TCK)
echo "$(basename "$WHO") $MODE: $(awk -v u=$((u1-u0)) -v s=$((s1-s0)) -v t="$tck" -v n="$N" \
  'BEGIN{printf "user %.2f sys %.2f total %.2f us/req", u/t*1e6/n, s/t*1e6/n, (u+s)/t*1e6/n}') rps=$rps ($ok)"
kill "$PX"; for p in $(cat "$D/pids"); do kill -- "-$p" 2>/dev/null || kill "$p"; done
rm -rf "$D"
