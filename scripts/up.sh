#!/usr/bin/env bash
# `make up`: the Docker stack where a Docker engine answers; otherwise the embedded
# default (chdb under ./data, `cvat-analytics serve` on 127.0.0.1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLI=.venv/bin/cvat-analytics
PY=.venv/bin/python
SPEC=${SPEC:-${CVAT_ANALYTICS_SPEC:-analytics.yaml}}

# What `make up` started, for `make down` and `make demo`: neither reads the spec, so a
# typo in it never keeps you from stopping the service.
STATE=${UP_STATE:-.up}
ENV_FILE=${ENV_FILE:-.env}

spec_value() {  # spec_value clickhouse.http_port; a bad spec: one line, exit 2
  "$PY" -m cvat_analytics_generator.spec "$SPEC" "$1"
}

sql_token_env() {  # the variable holding the secret of the spec's first token with the sql permission
  "$PY" - "$SPEC" <<'PY'
import sys
from cvat_analytics_generator.spec import load_spec
print(next((t["secret_env"] for t in load_spec(sys.argv[1])["access"]["tokens"] if "sql" in t["permissions"]), ""))
PY
}

ensure_env() {
  # Random secrets, added to .env for any that is missing; never committed (.gitignore),
  # never in rendered files. CLICKHOUSE_CVAT_SERVER_PASSWORD is for CVAT's own stack
  # (deploy/cvat-compose.override.yml), CLICKHOUSE_CLUSTER_SECRET, CLICKHOUSE_INTERSERVER_PASSWORD
  # and CLICKHOUSE_KEEPER_PASSWORD for a cluster render (docs/cluster.md); the spec's sql token (CVAT_ANALYTICS_TOKEN_SQL) is the
  # one way into serve's SQL interface.
  umask 077
  touch "$ENV_FILE"
  ENV_FILE="$ENV_FILE" "$PY" - $(sql_token_env) <<'PY'
import os, re, secrets, sys
names = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD", "CLICKHOUSE_DASHBOARDS_PASSWORD",
         "CLICKHOUSE_CVAT_SERVER_PASSWORD", "CLICKHOUSE_CLUSTER_SECRET", "CLICKHOUSE_INTERSERVER_PASSWORD",
         "CLICKHOUSE_KEEPER_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
         *sys.argv[1:])
path = os.environ["ENV_FILE"]
text = open(path).read()
have = set(re.findall(r"^([A-Z_]+)=", text, re.M))
missing = [n for n in names if n not in have]
with open(path, "a") as env:
    if missing and text and not text.endswith("\n"):
        env.write("\n")
    for name in missing:
        env.write(f"{name}={secrets.token_urlsafe(24)}\n")
if missing:
    print(f"added random {', '.join(missing)} to {path} (keep it; it is not in git)")
PY
}

wait_for_clickhouse() {  # wait_for_clickhouse HOST PORT ADMIN COMPOSE...
  # The real server, not the image's init-phase one: that listens on 127.0.0.1 inside the
  # container only, so the published port answers only once init is over and the real
  # server is up. Retried until a deadline, since a first start runs the init scripts.
  local host=$1 port=$2 admin=$3; shift 3
  local deadline=$(( $(date +%s) + ${CLICKHOUSE_WAIT_SECONDS:-180} ))
  until CH_PASSWORD="$CLICKHOUSE_ADMIN_PASSWORD" "$PY" - "$host" "$port" "$admin" <<'PY' 2>/dev/null
import base64, os, sys, urllib.request
host, port, user = sys.argv[1:]
request = urllib.request.Request(f"http://{host}:{port}/?query=SELECT%201")
token = base64.b64encode(f"{user}:{os.environ['CH_PASSWORD']}".encode()).decode()
request.add_header("Authorization", f"Basic {token}")
sys.exit(0 if urllib.request.urlopen(request, timeout=3).read().strip() == b"1" else 1)
PY
  do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "ClickHouse did not answer SELECT 1 as ${admin} on http://${host}:${port} within" \
           "${CLICKHOUSE_WAIT_SECONDS:-180} s (set CLICKHOUSE_WAIT_SECONDS to wait longer)." >&2
      echo "Its last log lines:" >&2
      "$@" logs --tail 30 clickhouse >&2 || true
      return 1
    fi
    sleep 2
  done
}

docker_up() {
  "$CLI" render --spec "$SPEC" --out deploy
  local compose=(docker compose --project-directory deploy -f deploy/docker-compose.yml --env-file "$ENV_FILE")
  "${compose[@]}" up -d --build clickhouse
  set -a; . "$(realpath "$ENV_FILE")"; set +a
  local host port admin db
  host=$(spec_value bind_address); port=$(spec_value clickhouse.http_port)
  admin=$(spec_value clickhouse.users.admin); db=$(spec_value clickhouse.database)
  [ "$host" = "0.0.0.0" ] && host=127.0.0.1
  wait_for_clickhouse "$host" "$port" "$admin" "${compose[@]}"
  # The password apart from the DSN (store.server_dsn reads CLICKHOUSE_PASSWORD): any character works.
  CLICKHOUSE_PASSWORD="$CLICKHOUSE_ADMIN_PASSWORD" "$CLI" migrate --spec "$SPEC" --dsn "http://${admin}@${host}:${port}"
  "${compose[@]}" up -d --build --wait
  printf 'mode=docker\ningest=http://%s:%s/\n' "$host" "$(spec_value vector.port)" > "$STATE"
  echo "cvat-analytics is up (Docker):"
  echo "  events in:  http://${host}:$(spec_value vector.port)/  (Vector, JSON array bodies)"
  echo "  ClickHouse: http://${host}:${port}  database ${db}"
  echo "  Grafana:    $(spec_value grafana.root_url)  (user admin, password GRAFANA_ADMIN_PASSWORD in .env)"
  echo "stop with: make down"
}

embedded_up() {
  local data host port pidfile
  data=$(spec_value embedded.data_dir); host=$(spec_value embedded.host); port=$(spec_value embedded.port)
  pidfile="$data/serve.pid"
  mkdir -p "$data"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "the embedded service is already running (pid $(cat "$pidfile")); stop it with: make down"
    return 0
  fi
  "$CLI" migrate --spec "$SPEC" --dsn "chdb://$data/clickhouse"
  # serve reads its tokens' secrets from the environment: those in .env.
  set -a; . "$(realpath "$ENV_FILE")"; set +a
  nohup "$CLI" serve --spec "$SPEC" --dsn "chdb://$data/clickhouse" --host "$host" --port "$port" \
    >>"$data/serve.log" 2>&1 &
  echo $! > "$pidfile"
  printf 'mode=embedded\npid=%s\ningest=http://%s:%s/\ndata=%s\n' "$(cat "$pidfile")" "$host" "$port" "$data" > "$STATE"
  for _ in $(seq 1 100); do
    # Up is any answer but "error": a 503 "alerting" names alert conditions (an ingest
    # stalled while serve was down, say), which the service reports, not a start failure.
    if "$PY" -c 'import json, sys, urllib.error, urllib.request
try: urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError as e: sys.exit(json.load(e).get("status") != "alerting")' \
         "http://$host:$port/health" 2>/dev/null; then
      echo "cvat-analytics is up (embedded, no Docker):"
      echo "  events in:  http://$host:$port/   (POST JSON arrays, as CVAT's server sends them)"
      echo "  health:     http://$host:$port/health"
      echo "  data:       $data/clickhouse (chdb); log: $data/serve.log; pid $(cat "$pidfile")"
      sql_usage "$host" "$port"
      echo "stop with: make down"
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.2
  done
  echo "the embedded service did not start; last lines of $data/serve.log:" >&2
  tail -n 20 "$data/serve.log" >&2
  return 1
}

sql_usage() {  # sql_usage HOST PORT: where the SQL token is and how to use it, never the secret itself
  local url="http://$1:$2" var secret
  var=$(sql_token_env)
  if [ -z "$var" ]; then
    echo "  SQL:        $url/clickhouse needs a token with the sql permission: add one to access.tokens (docs/working-time-and-sql.md, SQL)"
    return 0
  fi
  secret="\$(sed -n 's/^$var=//p' $ENV_FILE)"
  echo "  SQL:        $url/clickhouse (read-only) with the token in $ENV_FILE, variable $var:"
  echo "                curl -H \"Authorization: Bearer $secret\" '$url/clickhouse?query=SELECT+1'"
  echo "                .venv/bin/cvat-analytics query --dsn \"http://sql:$secret@$1:$2/clickhouse\" \"SELECT ...\""
  echo "              (clickhouse-connect, Grafana: the secret as the password; docs/working-time-and-sql.md, SQL)"
}

main() {
  spec_value version >/dev/null  # a bad spec stops here, with its one-line message
  # .env holds the secrets of both modes (access-token secrets, the Docker stack's passwords),
  # written once, so switching modes later keeps them.
  ensure_env
  case "$(docker_engine)" in
    up) docker_up ;;
    denied)
      # An engine is there but not for this user: starting the embedded default instead
      # would silently run a different stack.
      echo "the Docker engine refuses this user (permission denied on the Docker socket):" >&2
      echo "  add the user to the docker group (sudo usermod -aG docker \$USER, then log in again)" >&2
      echo "  or run make up as a user who may use Docker; nothing was started" >&2
      return 1 ;;
    *)
      echo "no Docker engine answers here: starting the embedded default (chdb) instead"
      embedded_up ;;
  esac
}

docker_engine() {  # up | denied (an engine refuses this user) | none (no client, or no engine answers)
  local said
  command -v docker >/dev/null 2>&1 || { echo none; return 0; }
  if said=$(docker info 2>&1); then
    echo up
  elif grep -qi "permission denied" <<<"$said"; then
    echo denied
  else
    echo none
  fi
}

# Sourced (tests), only the functions are defined.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main
fi
