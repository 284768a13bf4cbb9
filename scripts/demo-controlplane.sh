#!/usr/bin/env bash
# Control-plane demo: runs `l3ha server` and two `l3ha agent --dataplane fake`
# processes on loopback, creates an HA router with the l3ha CLI and shows
# which agent is active. Everything it starts it stops by PID.
set -euo pipefail
bin=${1:-bin/l3ha}
work=$(mktemp -d /tmp/l3ha-demo.XXXXXX)
port=19696
url=http://127.0.0.1:$port
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" server --bind 127.0.0.1:$port --state-dir "$work" --agent-token demo-token \
  --agent-down-time 6 >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -fs "$url/" >/dev/null 2>&1 && break; sleep 0.1; done
for h in network1 network2; do
  "$bin" agent --dataplane fake --host $h --server "$url" --agent-token demo-token \
    --state-dir "$work/$h" >"$work/agent-$h.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  [[ $("$bin" --url "$url" agent list -o json | grep -c '"alive": true') == 2 ]] && break
  sleep 0.1
done
echo "\$ l3ha agent list"
"$bin" --url "$url" agent list
echo
echo "\$ l3ha router create --ha demo-router"
"$bin" --url "$url" router create --ha demo-router >/dev/null
for _ in $(seq 1 100); do
  "$bin" --url "$url" router agents demo-router | grep -q active && break
  sleep 0.1
done
echo "\$ l3ha router agents demo-router"
"$bin" --url "$url" router agents demo-router
