"""`cvat-analytics`: one CLI, one subcommand per job. Exit codes: 0 ok, 1 failure,
2 bad spec or bad arguments. Errors are one line on stderr, never a traceback."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cvat_analytics_generator.spec import DEFAULT_SPEC, SPEC_ENV, SpecError, find_spec, load_spec

from . import output
from .errors import first_line
from .store import StoreError, connect, default_dsn

DSN_ENV, HOST_ENV, PORT_ENV = "CVAT_ANALYTICS_DSN", "CVAT_ANALYTICS_HOST", "CVAT_ANALYTICS_PORT"

DESCRIPTION = """Analytics and monitoring for CVAT: events in ClickHouse, working time, dashboards, CSV export.

Every config (Vector, ClickHouse, Grafana, docker compose) is rendered from one spec,
analytics.yaml. The commands below render and check those configs, apply the schema, load
and query events, compute working time, export CVAT's CSV and run the embedded service
(chdb, no Docker needed) that takes the events CVAT's server sends.

The spec is --spec, else $CVAT_ANALYTICS_SPEC, else ./analytics.yaml, else the default
that ships with the package (the init command writes it out for you to edit).
The store is --dsn, else $CVAT_ANALYTICS_DSN, else chdb://<embedded.data_dir>/clickhouse,
the data that make up starts the embedded service on."""

EXAMPLES = """examples:
  cvat-analytics init                      write analytics.yaml here, to edit
  cvat-analytics render --out deploy       every config, from the spec
  cvat-analytics serve                     the embedded service on 127.0.0.1:8282
  cvat-analytics demo                      post sample CVAT traffic to it
  cvat-analytics working-time --by user    hours per annotator
  cvat-analytics export --project-id 3 -o events.csv

exit codes: 0 ok, 1 failure, 2 bad spec or bad arguments."""


class CommandError(Exception):
    """A failure worded for the user; exit code 1."""


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=Path, default=None,
                   help=f"the spec file (default: ${SPEC_ENV}, else ./analytics.yaml, else the packaged default)")


def _dsn_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default=None,
                   help=f"ClickHouse: http://user:pass@host:8123 or chdb:///path (default: ${DSN_ENV}, "
                        "else chdb://<embedded.data_dir>/clickhouse from the spec)")


def _package_version() -> str:
    try:
        return version("cvat-analytics")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _format_arg(p: argparse.ArgumentParser, default: str = "pretty") -> None:
    p.add_argument("--format", choices=output.FORMATS, default=default,
                   help=f"output format (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvat-analytics", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write the default spec (analytics.yaml) into a directory, to edit")
    p.add_argument("directory", nargs="?", default=".", help="where to write it (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite an existing analytics.yaml")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("render", help="render every config from the spec into a deploy directory")
    _spec_arg(p)
    p.add_argument("--out", type=Path, default=None, help="output directory (default: deploy, or deploy-k8s for --target k8s)")
    _target_arg(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="fail when a deploy directory is out of sync with the spec or invalid")
    _spec_arg(p)
    p.add_argument("--out", type=Path, default=None, help="directory to check (default: deploy, or deploy-k8s for --target k8s)")
    _target_arg(p)
    p.add_argument("--cvat", type=Path, default=None, metavar="PATH",
                   help="also fail when the override adopted into this CVAT checkout was rendered for another "
                        "release, or its .env's COMPOSE_FILE does not list it")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("adopt", help="put the override into a CVAT checkout: render it for the checkout's release and "
                                     "list it in CVAT's .env (COMPOSE_FILE), so a plain docker compose up -d keeps it")
    _spec_arg(p)
    p.add_argument("cvat", type=Path, metavar="CVAT_DIR", help="CVAT's checkout (where its docker-compose.yml is)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where to render (DIR/deploy, the spec used in DIR/analytics.yaml; default: CVAT_DIR/cvat-analytics)")
    p.set_defaults(func=cmd_adopt)

    p = sub.add_parser("dashboards", help="dashboards of your own: dashboards import FILE.json turns a dashboard saved in Grafana into one")
    dashboards_sub = p.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    q = dashboards_sub.add_parser("import", help="turn a Grafana dashboard's JSON into a definition in custom_dashboards_dir")
    _spec_arg(q)
    q.add_argument("file", type=Path, nargs="?", help="the dashboard's JSON, as Grafana's Export / Save JSON gives it")
    q.add_argument("--from-cvat", type=Path, default=None, metavar="CVAT_DIR",
                   help="instead of FILE: every dashboard in CVAT's checkout's components/analytics/grafana/dashboards "
                        "that no CVAT release shipped (the ones edited there, as CVAT's docs say)")
    q.add_argument("--name", default=None,
                   help="the definition's file name, without .yaml (default: from the title; a built-in's name replaces it)")
    q.set_defaults(func=cmd_dashboards_import)

    p = sub.add_parser("migrate", help="apply the schema to ClickHouse; a second run changes nothing")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("--yes", action="store_true",
                   help="apply a retention (TTL) change even when it drops stored events (default: refuse, with the counts)")
    p.add_argument("--dry-run", action="store_true",
                   help="cluster spec: print the statements migrate would send, per server, and send none")
    p.add_argument("--resharded", action="store_true",
                   help="cluster spec: the data was re-sharded to the spec's shard count (docs/cluster.md); record it")
    p.add_argument("--target", choices=["compose", "k8s"], default="compose",
                   help="k8s: the database was made by the Kubernetes render, whose schema is the cluster's at any layout")
    p.add_argument("--shard-dsn", action="append", default=[], metavar="N=DSN",
                   help="cluster spec: where to reach a replica of shard N for its data steps (default: the host "
                        "names the server's remote_servers lists, with --dsn's port and user)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("import", help="load events from a JSON array, NDJSON or CVAT's CSV export")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("file", help="the file to load, or - for standard input")
    p.add_argument("--skip-invalid", action="store_true",
                   help="store the valid records and report each invalid one (default: store nothing)")
    p.add_argument("--batch-size", type=int, default=50_000, help="events per INSERT (default: 50000)")
    p.add_argument("--again", action="store_true",
                   help="store the events even if the same ones were imported before (default: skip them)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("query", help="run SQL and print the result")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("sql", help="the query")
    _format_arg(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("serve", help="the embedded service: event ingest, CSV export, dashboards")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("--host", default=None,
                   help=f"address to bind (default: ${HOST_ENV}, else the spec's embedded.host)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default: ${PORT_ENV}, else the spec's embedded.port)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="the log on stderr: one text line per record, or one JSON object per line (default: text)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("working-time", help="working time per user/project/task/job, exact at the moment it runs")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("--by", default="user,project,task,job", type=_by_arg,
                   help="grouping: a list of user,project,task,job and optionally day or hour")
    for name in ("user", "project", "task", "job"):
        p.add_argument(f"--{name}-id", type=int, default=None, help=f"only this {name} (credited ids)")
    p.add_argument("--from", dest="from_ts", default=None, help="count time at events from this ISO time (UTC)")
    p.add_argument("--to", dest="to_ts", default=None, help="... up to this ISO time, exclusive")
    p.add_argument("--engine", choices=("sql", "udf"), default=None,
                   help="window SQL or the executable UDF (default: the spec's working_time.engine)")
    _format_arg(p, default="csv")
    p.set_defaults(func=cmd_working_time)

    p = sub.add_parser("timesheet", help="working time per user and day (and project) as CSV, for payroll")
    _spec_arg(p)
    _dsn_arg(p)
    p.add_argument("--from", dest="from_day", metavar="DAY", help="first day, YYYY-MM-DD (UTC; default: the beginning)")
    p.add_argument("--to", dest="to_day", metavar="DAY", help="last day, YYYY-MM-DD (UTC; default: the end)")
    for name in ("user", "org", "project"):
        p.add_argument(f"--{name}-id", metavar="N", help=f"only this {name}" + (
            "'s jobs" if name == "org" else ""))
    p.add_argument("--by-project", action="store_true", help="a row per user, day and project")
    p.add_argument("-o", "--output", default="-", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_timesheet)

    p = sub.add_parser("export", help="CVAT's event CSV export (as GET /api/events gives it) to a file or stdout")
    _spec_arg(p)
    _dsn_arg(p)
    for name in ("org-id", "project-id", "task-id", "job-id", "user-id"):
        p.add_argument(f"--{name}", metavar="N", help=f"only events with this {name.replace('-', '_')}")
    p.add_argument("--from", dest="from_", metavar="T", help="ISO 8601, naive = UTC (default: the beginning, as CVAT 2.36+)")
    p.add_argument("--to", metavar="T", help="ISO 8601, naive = UTC (default: now)")
    p.add_argument("-o", "--output", default="-", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="generate realistic CVAT traffic into a service (--url) or a store (--dsn)")
    _spec_arg(p)
    p.add_argument("--url", help="POST CVAT's bodies here, e.g. Vector's http://127.0.0.1:8282/ "
                                 "(default: the embedded service at the spec's embedded.host and embedded.port)")
    p.add_argument("--dsn", default=None, help="insert directly instead (fast): chdb:///path or http://...")
    p.add_argument("--events", type=int, default=20_000, help="how many events (default: 20000)")
    p.add_argument("--days", type=float, default=7, help="spread over the last D days (default: 7)")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same traffic")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="measure every headline figure against its baseline (docs/benchmarks.md)")
    _spec_arg(p)
    p.add_argument("--events", type=int, default=10_000_000, help="events to generate (default: 10000000)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON to this file")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a new one under $TMPDIR, removed)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (stores, logs)")
    p.add_argument("--seed", type=int, default=1, help="demo generator seed (default: 1)")
    p.add_argument("--runs", type=int, default=5,
                   help="timed runs of each panel's query after a warm-up; the median is reported (default: 5)")
    p.set_defaults(func=cmd_bench)
    bench_sub = p.add_subparsers(dest="bench_command", required=False, metavar="ACTION")
    q = bench_sub.add_parser("soak", help="steady ingest into a real serve for N minutes: memory, latency, "
                                          "refresh cost per minute; nothing lost, totals exact (docs/benchmarks.md)")
    _spec_arg(q)
    q.add_argument("--minutes", type=float, default=60, help="how long to send (default: 60)")
    q.add_argument("--rate", type=float, default=2800, help="events per second (default: 2800)")
    q.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON to this file")
    q.add_argument("--workdir", default=None, help="where the store and serve's log go (default: a new directory, kept)")
    # Seconds per row of the table (a minute); shorter for the test of the command itself.
    q.add_argument("--interval-s", type=float, default=60, help=argparse.SUPPRESS)
    q.set_defaults(func=cmd_bench_soak)
    return parser


def cmd_init(args) -> int:
    target = Path(args.directory) / "analytics.yaml"
    if target.exists() and not args.force:
        raise CommandError(f"{target} exists; edit it, or add --force to replace it with the default")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_SPEC, target)
    print(f"wrote {target}: edit it, then `cvat-analytics render` or `cvat-analytics serve`")
    return 0


def _target_arg(p) -> None:
    p.add_argument("--target", choices=["compose", "k8s"], default="compose",
                   help="compose: Docker Compose (default); k8s: Kubernetes manifests for the Altinity clickhouse-operator")


def _rendered(args) -> dict[str, str]:
    """The files of the target, and the default output directory filled in."""
    from cvat_analytics_generator.render import render_all

    from cvat_analytics_generator.spec import warnings

    spec = load_spec(args.spec)
    for warning in warnings(spec):
        print(f"cvat-analytics: warning: {args.spec}: {warning}", file=sys.stderr)
    if args.out is None:
        args.out = Path("deploy-k8s" if args.target == "k8s" else "deploy")
    if args.target == "k8s":
        from cvat_analytics_generator.k8s import K8sSpecError, render_k8s
        try:
            return render_k8s(spec)
        except K8sSpecError as exc:
            raise CommandError(f"{args.spec}: {exc}") from None
    return render_all(spec)


def cmd_render(args) -> int:
    from cvat_analytics_generator.render import write_tree

    files = _rendered(args)
    write_tree(files, args.out)
    print(f"rendered {len(files)} files into {args.out}")
    return 0


def cmd_check(args) -> int:
    from cvat_analytics_generator.render import diff_tree, is_cluster
    from cvat_analytics_generator.validate import validate_tree

    files = _rendered(args)
    problems = diff_tree(files, args.out)
    if args.target == "k8s":
        from cvat_analytics_generator.k8s import problems as k8s_problems
        problems += k8s_problems(files)
    else:
        problems += validate_tree(files)
    problems = [f"{args.out}/{p}" for p in problems]
    if args.target == "compose" and is_cluster(spec := load_spec(args.spec)):  # the plan of `migrate` on it
        from .cluster_migrate import plan_problems
        problems += plan_problems(spec, files)
    if args.cvat is not None:
        from .cvat_checkout import checkout_problems

        problems += checkout_problems(args.cvat)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check failed: {len(problems)} problem(s); run `cvat-analytics render --out {args.out}"
              + (" --target k8s" if args.target == "k8s" else "") + "`"
              " if the spec changed", file=sys.stderr)
        return 1
    print(f"{args.out} matches {args.spec} and every rendered file is valid ({len(files)} files)"
          + (f"; {args.cvat} starts with the override rendered for its release" if args.cvat is not None else ""))
    return 0


def cmd_adopt(args) -> int:
    from .cvat_checkout import CheckoutError, adopt

    try:
        adopt(args.cvat, load_spec(args.spec), out=args.out)
    except CheckoutError as exc:
        raise CommandError(f"not adopted: {exc}") from None
    return 0


def cmd_dashboards_import(args) -> int:
    spec = load_spec(args.spec)
    folder = spec.get("custom_dashboards_dir")
    if not folder:
        raise CommandError(f"{args.spec}: custom_dashboards_dir is empty: name a folder for your dashboards first")
    if (args.file is None) == (args.from_cvat is None):
        raise CommandError("dashboards import: give FILE or --from-cvat CVAT_DIR")
    files = [args.file]
    if args.from_cvat is not None:
        # CVAT's documented customisation saves the edited JSON into its own dashboards
        # folder; our override reads ours instead (generator/contracts.py says why), so the
        # files there that no CVAT release shipped are the administrator's: taken in here.
        from cvat_analytics_generator.contracts import CVAT_DASHBOARDS, cvat_dashboard_changes
        try:
            files = cvat_dashboard_changes(args.from_cvat)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        if not files:
            print(f"{args.from_cvat / CVAT_DASHBOARDS}: every dashboard there is one a CVAT release shipped: nothing to import")
    parsed = [(file, *_parse_dashboard(file)) for file in files]  # every file read before any is written
    for file, definition, lost in parsed:
        _write_dashboard(spec, Path(folder), definition, lost, args.name if args.from_cvat is None else None)
    return 0


def _parse_dashboard(file: Path) -> tuple[dict, list[str]]:
    from cvat_analytics_generator import user_file
    from cvat_analytics_generator.grafana_import import DashboardImportError, definition_from_json
    try:
        return definition_from_json(user_file.read_text(file), str(file))
    except (user_file.UserFileError, DashboardImportError) as exc:
        raise CommandError(str(exc)) from None


def _write_dashboard(spec: dict, folder: Path, definition: dict, lost: list[str], name: str | None) -> None:
    from cvat_analytics_generator import grafana
    from cvat_analytics_generator.grafana_import import name_for, write_definition
    builtin = next((n for n, uid in spec["dashboards"].items() if uid == definition["uid"]), None)
    name = name or builtin or name_for(definition["title"])
    path = write_definition(definition, folder, name)
    try:
        grafana.load_all(spec)  # the next render and serve read it: fail now, not there
    except grafana.DefinitionError as exc:
        path.unlink()
        raise CommandError(f"not imported: {exc}") from None
    for line in lost:
        print(line)
    print(f"wrote {path} ({len(definition['panels'])} panels, {len(definition['variables'])} variables)"
          + (f"; it replaces the built-in {builtin}" if builtin else "")
          + "; run `cvat-analytics render` to put it into Grafana's provisioning")


def cmd_migrate(args) -> int:
    from cvat_analytics_generator.render import is_cluster

    from .migrate import migrate

    spec = load_spec(args.spec)
    if is_cluster(spec) or args.target == "k8s":
        from .cluster_migrate import ClusterMigrateError, migrate_cluster, require_server, shard_connector
        try:
            require_server(args.dsn)
            client = connect(args.dsn)
            migrate_cluster(client, spec, shard_connector(args.dsn, client, spec, args.shard_dsn),
                            assume_yes=args.yes, resharded=args.resharded, dry_run=args.dry_run,
                            k8s=args.target == "k8s")
        except ClusterMigrateError as exc:
            raise CommandError(str(exc)) from None
        return 0
    if args.dry_run or args.resharded or args.shard_dsn:
        raise CommandError("--dry-run, --resharded and --shard-dsn are for a cluster spec (clickhouse.cluster "
                           "above 1 x 1); this spec renders one server")
    migrate(connect(args.dsn), spec, assume_yes=args.yes)
    return 0


def cmd_import(args) -> int:
    from .importer import run_import

    spec = load_spec(args.spec)
    return run_import(connect(args.dsn), spec, args.file, skip_invalid=args.skip_invalid,
                      batch_size=args.batch_size, again=args.again)


def cmd_query(args) -> int:
    load_spec(args.spec)
    result = connect(args.dsn, create=False).query(args.sql)
    output.write_rows(result.column_names, result.result_rows, args.format)
    return 0


def cmd_serve(args) -> int:
    from .service import serve

    spec = load_spec(args.spec)
    host, port = service_address(spec, args.host, args.port)
    return serve(args.dsn, spec, host, port, log_format=args.log_format)


def service_address(spec: dict, host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """The flags' host and port, else the environment's, else the spec's."""
    host = host or os.environ.get(HOST_ENV) or spec["embedded"]["host"]
    if port is not None:
        return host, port
    text = os.environ.get(PORT_ENV)
    if text is None:
        return host, spec["embedded"]["port"]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CommandError(f"${PORT_ENV}: expected a port number, got {text!r}")
    return host, int(text)


def _by_arg(text: str) -> list[str]:
    from .working_time import WorkingTimeError, parse_by

    try:
        return parse_by(text)
    except WorkingTimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_export(args) -> int:
    from .export import FilterError, export_to_path, parse_filters

    spec = load_spec(args.spec)
    query = {k: [v] for k, v in (("org_id", args.org_id), ("project_id", args.project_id),
                                 ("task_id", args.task_id), ("job_id", args.job_id),
                                 ("user_id", args.user_id), ("from", args.from_), ("to", args.to))
             if v is not None}
    try:
        filters = parse_filters(query)
    except FilterError as exc:
        print(f"cvat-analytics: --{exc.param.replace('_', '-')}: {exc.reason}", file=sys.stderr)
        return 2
    from .progress import Progress

    with Progress("exporting", unit="rows") as shown:  # on a terminal only (stderr)
        def progress(done: int, total: int) -> None:
            shown.total = total  # the planned windows' counts: known before the first row
            shown.update(done)

        rows = export_to_path(connect(args.dsn, create=False), spec, filters, args.output,
                              out=sys.stdout.buffer, progress=progress)
    if args.output != "-":
        print(f"exported {rows} events to {args.output}", file=sys.stderr)
    return 0


def cmd_timesheet(args) -> int:
    from . import productivity

    from . import working_time

    spec = load_spec(args.spec)
    client = connect(args.dsn, create=False)
    working_time.wait_current(client, spec)  # the totals count every event stored before now
    try:
        columns, rows = productivity.timesheet(
            client, spec, args.by_project, from_day=args.from_day, to_day=args.to_day,
            user_id=args.user_id, org_id=args.org_id, project_id=args.project_id)
    except productivity.ProductivityError as exc:
        flag = {"from": "--from", "to": "--to"}.get(exc.param, "--" + exc.param.replace("_", "-"))
        print(f"cvat-analytics: {flag}: {exc.reason}", file=sys.stderr)
        return 2
    except Exception as exc:
        if productivity.memory_limit_hit(exc):
            raise CommandError(f"the timesheet needed more memory than embedded.timesheet.max_memory_bytes "
                               f"({spec['embedded']['timesheet']['max_memory_bytes']}) of {args.spec}; "
                               "narrow the days or the filters, or raise it") from None
        raise
    body = productivity.timesheet_csv(columns, rows)
    if args.output == "-":
        sys.stdout.buffer.write(body)
    else:
        # Whole or not at all: written beside the target, then renamed over it.
        target = Path(args.output)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(body)
        partial.replace(target)
        print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from . import demo

    spec = load_spec(args.spec)
    if args.url and args.dsn:
        raise CommandError("give --url or --dsn, not both")
    if args.events < 0:
        raise CommandError("--events must be >= 0")
    if args.dsn:
        demo.run(args.events, args.days, args.seed, client=connect(args.dsn),
                 database=spec["clickhouse"]["database"])
    elif args.url:
        demo.run(args.events, args.days, args.seed, url=args.url)
    else:
        host, port = service_address(spec)
        host = f"[{host}]" if ":" in host else host
        demo.run(args.events, args.days, args.seed, url=f"http://{host}:{port}/")
    return 0


def _exit_on_sigterm() -> None:
    """A long command stopped by SIGTERM (`timeout`, `kill`, a CI job cancelled) unwinds as on
    Ctrl-C: its `finally` blocks stop the servers and phases it started and remove its scratch
    directory. Python's default is to die at once, leaving them running on their chdb paths."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def cmd_bench(args) -> int:
    from . import bench

    _exit_on_sigterm()
    if args.events < 1000:
        raise CommandError("--events must be at least 1000")
    if args.runs < 1:
        raise CommandError("--runs must be at least 1")
    bench.run(args.events, json_path=args.json_path, spec_path=str(args.spec), workdir=args.workdir,
              keep=args.keep, seed=args.seed, runs=args.runs)
    return 0


def cmd_bench_soak(args) -> int:
    from .bench import soak

    _exit_on_sigterm()
    if args.minutes <= 0 or args.rate < 100 or args.interval_s < 1:
        raise CommandError("--minutes must be above 0, --rate at least 100 (one body a second), --interval-s at least 1")
    try:
        report = soak.run(args.minutes, args.rate, spec_path=str(args.spec), json_path=args.json_path,
                          workdir=args.workdir, interval_s=args.interval_s)
    except soak.SoakError as exc:
        raise CommandError(str(exc)) from None
    return 0 if report["exactly_once"] and report["totals_exact"] else 1


def cmd_working_time(args) -> int:
    from . import working_time as wt

    spec = load_spec(args.spec)
    try:
        by = args.by
        engine = args.engine or spec["working_time"]["engine"]
        client = wt.connect_with_udf(args.dsn, spec) if engine == "udf" else connect(args.dsn, create=False)
        columns, rows = wt.totals(client, spec, by, user_id=args.user_id, project_id=args.project_id,
                                  task_id=args.task_id, job_id=args.job_id, from_ts=args.from_ts,
                                  to_ts=args.to_ts, engine=engine)
    except wt.WorkingTimeError as exc:
        raise CommandError(str(exc)) from None
    output.write_rows(columns, rows, args.format)
    return 0


def _resolve_defaults(args) -> None:
    """The spec file and the DSN, where no flag gave them (see DESCRIPTION)."""
    if hasattr(args, "spec"):
        args.spec = find_spec(args.spec)
    if getattr(args, "dsn", "") is None and args.command != "demo":
        args.dsn = os.environ.get(DSN_ENV) or default_dsn(load_spec(args.spec))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_defaults(args)
        return args.func(args)
    except SpecError as exc:
        print(f"cvat-analytics: {exc}", file=sys.stderr)
        return 2
    except (StoreError, CommandError) as exc:
        print(f"cvat-analytics: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # ClickHouse errors and the like: one line, not a traceback
        print(f"cvat-analytics: {args.command} failed: {first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
