#!/usr/bin/env bash
# `make down`: stop whatever `make up` started, as recorded in .up. It never reads the
# spec, so a spec with a mistake in it cannot keep the service from stopping.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${UP_STATE:-.up}
state_value() { sed -n "s/^$1=//p" "$STATE" 2>/dev/null || true; }

pid=$(state_value pid)
mode=$(state_value mode)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  echo "stopped the embedded service (pid $pid)"
  data=$(state_value data)
  [ -n "$data" ] && rm -f "$data/serve.pid"
fi
if [ "$mode" = docker ] || { docker info >/dev/null 2>&1 && [ -f deploy/docker-compose.yml ]; }; then
  if docker info >/dev/null 2>&1; then
    docker compose --project-directory deploy -f deploy/docker-compose.yml --env-file .env down
  fi
fi
rm -f "$STATE"
[ -n "$mode" ] || echo "nothing was running (no .up file from make up)"
