#!/usr/bin/env bash
# `make down`: stop the embedded service and/or the Docker stack, whichever runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${SPEC:-analytics.yaml}
data=$(.venv/bin/python -c 'import sys; from cvat_analytics_generator.spec import load_spec; print(load_spec(sys.argv[1])["embedded"]["data_dir"])' "$SPEC")
pidfile="$data/serve.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped the embedded service (pid $pid)"
  fi
  rm -f "$pidfile"
fi
if docker info >/dev/null 2>&1 && [ -f deploy/docker-compose.yml ]; then
  docker compose --project-directory deploy -f deploy/docker-compose.yml --env-file .env down
fi
