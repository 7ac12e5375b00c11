#!/usr/bin/env bash
# Issue 13: one node alone (history off) against `mtlschat server --workers 2 --redis URL`, alternating,
# burst then paced; server CPU summed over both workers and redis-server. Usage: redis_workers.sh REPEAT MESSAGES
# CONFIGS="alone sqlite workers2" adds one node with its default SQLite history (a new file each run).
set -u
V=${V:-$(dirname "$0")/../.venv/bin}
REP=${1:-3}; M=${2:-10000}
D=$(mktemp -d /tmp/mtlschat-workers-bench.XXXX)
trap 'rm -rf "$D"' EXIT
$V/mtlschat ca init --pki $D/pki >/dev/null && $V/mtlschat ca issue --pki $D/pki --server 127.0.0.1 localhost >/dev/null
free() { $V/python -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
run() { # $1 config $2 workload args...
  local cfg=$1; shift
  local P=$(free) RP PIDS=() SP=()
  if [ $cfg = alone ] || [ $cfg = sqlite ]; then
    local H=off; [ $cfg = sqlite ] && H=$(mktemp -u $D/history.XXXX.db)
    $V/mtlschat server --pki $D/pki --host 127.0.0.1 --port $P --rate 0 --history $H --control off --max-handshakes-per-address 10000 --join-rate 0 > $D/s.log 2>&1 &
    PIDS=($!)
  else
    RP=$(free); redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no --dir $D >/dev/null & RPID=$!
    sleep 0.3
    $V/mtlschat server --pki $D/pki --host 127.0.0.1 --port $P --rate 0 --history off --control off --max-handshakes-per-address 10000 --join-rate 0 --workers 2 --redis redis://127.0.0.1:$RP/0 > $D/s.log 2>&1 &
    SUP=$!
  fi
  sleep 2.5
  if [ $cfg = workers2 ]; then PIDS=($(pgrep -P $SUP)) ; PIDS+=($RPID); fi
  for p in "${PIDS[@]}"; do SP+=(--server-pid $p); done
  $V/mtlschat bench 127.0.0.1:$P --pki $D/pki "$@" "${SP[@]}" --json > $D/b.json 2>$D/b.err
  python3 -c "
import json;d=json.load(open('$D/b.json'))['runs'][0];l=d.get('latency_ms',{})
print('$cfg', '$*', 'cpu/delivery', round(d['server']['cpu_per_delivery_us'],4), 'p50', l.get('p50'), 'p99', l.get('p99'), 'lost', d['lost'])" 2>&1 | tail -1
  if [ $cfg = workers2 ]; then kill -TERM $SUP; sleep 1; kill $RPID; else kill -INT ${PIDS[0]}; fi
  wait 2>/dev/null
}
for i in $(seq 1 $REP); do
  for cfg in ${CONFIGS:-alone workers2}; do run $cfg -w burst -n 200 -m $M; done
  for cfg in ${CONFIGS:-alone workers2}; do run $cfg -w paced -n 200 --rate 300 --duration 10; done
done
