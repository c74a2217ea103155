"""Productivity figures (docs/productivity.md) on chdb against the same definitions in plain
Python, on a hand-written stream: a job rejected twice, tracks with negative diffs, a user
on two jobs at once, deletions outweighing creations, and late, shuffled events."""
from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from cvat_analytics import productivity
from cvat_analytics import store as store_module
from cvat_analytics import working_time as wt

sys.path.insert(0, str(Path(__file__).parent))
import working_time_oracle as oracle  # noqa: E402

pytestmark = pytest.mark.xdist_group("productivity-stream")  # one worker builds `loaded`

# Midnight ten days ago (inside the default retention), in ms.
DAY = 86_400_000
BASE = (int(time.time()) - 10 * 86400) // 86400 * DAY
H = 3_600_000
# job -> (task, project, org); job 13 is outside every organisation.
JOBS = {11: (101, 1001, 7), 12: (101, 1001, 7), 13: (102, 1002, None)}


def _ids(job):
    task, project, org = JOBS[job]
    return {"job_id": job, "task_id": task, "project_id": project, "org_id": org}


def server(ts, scope, user, job, **cols):
    return {"scope": scope, "source": "server", "ts": BASE + ts, "user_id": user, "user_name": f"user{user}",
            "duration": 0, **_ids(job), **cols}


def client(ts, user, job, scope="click:element", duration=0):
    return {"scope": scope, "source": "client", "ts": BASE + ts, "user_id": user, "user_name": f"user{user}",
            "duration": duration, **_ids(job)}


def objects(ts, action, kind, user, job, count, shape="rectangle", diffs=None):
    cols = {"count": count}
    if kind == "tags":
        cols["payload"] = json.dumps({"tags": [{"id": i} for i in range(count)]})
    elif kind == "shapes":
        cols.update(obj_name=shape, payload=json.dumps({"shapes": [{"id": i} for i in range(count)]}))
    else:
        tracks = [{"id": i, "visible_shapes_count_diff": d, "shapes": []} for i, d in enumerate(diffs)]
        cols.update(obj_name=shape, count=len(tracks), payload=json.dumps({"tracks": tracks}))
    return server(ts, f"{action}:{kind}", user, job, **cols)


def job_change(ts, user, job, field, old, new):
    return server(ts, "update:job", user, job, obj_name=field, obj_val=new, payload=json.dumps({"old_value": old}))


def stream():
    """Two days of work on three jobs by three users."""
    e = [server(0, "create:job", 9, j, obj_id=j) for j in JOBS]
    rng = random.Random(29)
    # user 1 annotates jobs 11 and 12 at once (two tabs), user 2 job 12 then 13, both days.
    for day in (0, 1):
        t0 = day * DAY + 9 * H
        for i in range(120):
            e.append(client(t0 + i * rng.choice((5_000, 20_000, 99_999, 100_000)), 1, 11 if i % 2 else 12,
                            rng.choice(("click:element", "change:frame")), rng.randint(0, 8_000)))
            e.append(client(t0 + 30 * 60_000 + i * 15_000, 2, 12 if i < 60 else 13))
        e += [
            objects(t0 + 60_000, "create", "shapes", 1, 11, 14, "rectangle"),
            objects(t0 + 61_000, "create", "shapes", 1, 11, 3, "polygon"),
            objects(t0 + 62_000, "create", "tracks", 1, 11, 0, "rectangle", diffs=[12, 30]),
            objects(t0 + 900_000, "update", "tracks", 1, 11, 0, "rectangle", diffs=[-4, 2]),
            objects(t0 + 901_000, "update", "shapes", 1, 12, 5, "points"),
            objects(t0 + 902_000, "create", "tags", 1, 12, 2),
            objects(t0 + 2 * H, "create", "shapes", 2, 12, 4, "rectangle"),
            # deletions outweigh creations for user 2 on job 13
            objects(t0 + 3 * H, "create", "shapes", 2, 13, 2, "mask"),
            objects(t0 + 3 * H + 5_000, "delete", "shapes", 2, 13, 9, "mask"),
            objects(t0 + 3 * H + 6_000, "delete", "tracks", 2, 13, 0, "polyline", diffs=[-7]),
        ]
    # job 11: submitted, rejected twice, then accepted; job 12 accepted first time; 13 waits.
    for ts, user, field, old, new in [
        (1 * H, 1, "state", "new", "in progress"),
        (10 * H, 1, "state", "in progress", "completed"), (10 * H, 5, "stage", "annotation", "validation"),
        (11 * H, 3, "state", "completed", "rejected"), (11 * H, 3, "stage", "validation", "annotation"),
        (DAY + 10 * H, 5, "stage", "annotation", "validation"),
        (DAY + 11 * H, 4, "state", "in progress", "rejected"), (DAY + 11 * H, 4, "stage", "validation", "annotation"),
        (DAY + 12 * H, 5, "stage", "annotation", "validation"),
        (DAY + 13 * H, 3, "stage", "validation", "acceptance"),
    ]:
        e.append(job_change(ts, user, 11, field, old, new))
    e += [job_change(12 * H, 5, 12, "stage", "annotation", "validation"),
          job_change(DAY + 14 * H, 4, 12, "stage", "validation", "acceptance"),
          job_change(DAY + 15 * H, 5, 13, "stage", "annotation", "validation")]
    return e


def _as_rows(events):
    lines = []
    for e in events:
        row = {k: v for k, v in e.items() if k != "ts"}
        row["timestamp"] = (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=e["ts"])).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3]
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def _day(ms):
    return dt.date(1970, 1, 1) + dt.timedelta(milliseconds=ms)


def insert_late_and_shuffled(store, events):
    """The latest half first (shuffled) and refreshed, then the earliest half, as late events."""
    events = sorted(events, key=lambda e: e["ts"])
    early, late = events[: len(events) // 2], events[len(events) // 2:]
    for batch in (late, early):
        batch = batch[:]
        random.Random(len(batch)).shuffle(batch)
        store_module.insert_json_rows(store.client, store.database, _as_rows(batch))
        wt.wait_current(store.client, store.spec)


# --- the definitions in plain Python -------------------------------------------------------

def speed_oracle(events, level):
    key_of = {"job": 0, "task": 1, "project": 2}
    acc = defaultdict(lambda: defaultdict(int))

    def key(job):
        task, project, org = JOBS[job]
        return {"job": job, "task": task, "project": project, "org": org or 0}[level]

    for e in events:
        action, _, kind = e["scope"].partition(":")
        if e["source"] != "server" or kind not in ("tags", "shapes", "tracks"):
            continue
        row = acc[(e["user_id"], _day(e["ts"]), key(e["job_id"]))]
        name = {"create": "created", "update": "updated", "delete": "deleted"}[action]
        row[name] += e["count"]
        if kind == "tracks":
            row["track_shapes_diff"] += sum(t["visible_shapes_count_diff"] for t in json.loads(e["payload"])["tracks"])
    for e, added, (job, _task, _project) in oracle.per_event(events):
        if job is not None and added:
            acc[(e["user_id"], _day(e["ts"]), key(job))]["working_time_ms"] += added
    del key_of
    out = {}
    for k, row in acc.items():
        touched = row["created"] + row["updated"] + row["deleted"]
        ms = row["working_time_ms"]
        out[k] = (row["created"], row["updated"], row["deleted"], row["created"] - row["deleted"],
                  row["track_shapes_diff"], ms, touched * 3_600_000 / ms if ms else None)
    return out


def reviews_oracle(events):
    out = {}
    for job in JOBS:
        mine = [e for e in events if e["job_id"] == job and e["source"] == "server"]
        stage_changes = sorted((e["ts"], e["obj_val"], json.loads(e["payload"])["old_value"])
                               for e in mine if e["scope"] == "update:job" and e["obj_name"] == "stage")
        created = min(e["ts"] for e in mine if e["scope"] == "create:job")
        stages = sorted([(created, stage_changes[0][2] if stage_changes else "annotation")]
                        + [(ts, new) for ts, new, _ in stage_changes])
        spent = defaultdict(int)
        for (ts, stage), (nxt, _) in zip(stages, stages[1:]):
            spent[stage] += nxt - ts
        creates = [e for e in mine if e["scope"] in ("create:tags", "create:shapes", "create:tracks")]
        first_annotation = min(e["ts"] for e in creates)
        accepted = [ts for ts, new, _ in stage_changes if new == "acceptance"]
        decisions = sorted((e["ts"], int(e["obj_name"] == "stage"), e["user_id"]) for e in mine
                           if e["scope"] == "update:job" and (e["obj_name"], e["obj_val"])
                           in (("stage", "acceptance"), ("state", "rejected")))
        annotator = None
        if decisions:
            made = defaultdict(int)
            for e in creates:
                if e["ts"] < decisions[0][0]:
                    made[e["user_id"]] += e["count"]
            annotator = min(made, key=lambda u: (-made[u], u)) if made else None
        out[job] = {
            "rejections": sum(1 for e in mine if e["scope"] == "update:job" and e["obj_name"] == "state"
                              and e["obj_val"] == "rejected"),
            "annotation_ms": spent["annotation"], "validation_ms": spent["validation"],
            "acceptance_ms": spent["acceptance"], "current_stage": stages[-1][1],
            "annotation_to_acceptance_ms": accepted[0] - first_annotation if accepted else None,
            "first_pass": (decisions[0][1] == 1) if decisions else None,
            "reviewer": decisions[0][2] if decisions else None, "annotator": annotator,
        }
    return out


def rates_oracle(per_job, who):
    acc = defaultdict(lambda: [0, 0])
    for job in per_job.values():
        if job["first_pass"] is None or job[who] is None:
            continue
        acc[job[who]][0] += 1
        acc[job[who]][1] += job["first_pass"]
    return {u: (n, ok, ok / n) for u, (n, ok) in acc.items()}


def timesheet_oracle(events, by_project=False):
    acc = defaultdict(int)
    for e, added, (_job, _task, project) in oracle.per_event(events):
        key = (e["user_id"], _day(e["ts"])) + ((project,) if by_project else ())
        acc[key] += added
    return {k: v for k, v in acc.items() if v}


# --- the tests ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(chdb_dsn, tmp_path_factory):
    """A database of its own holding stream(), stored late and shuffled; read-only for the tests."""
    import uuid

    from cvat_analytics.migrate import migrate
    from cvat_analytics_generator.spec import load_spec
    from tests.conftest import Store, write_spec

    _, path = write_spec(tmp_path_factory.mktemp("spec"), **{"clickhouse.database": f"t_{uuid.uuid4().hex[:12]}"})
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    store = Store(chdb_dsn, spec, path, client)
    events = stream()
    insert_late_and_shuffled(store, events)
    yield store, events
    client.command(f"DROP DATABASE IF EXISTS `{store.database}` SYNC")


@pytest.mark.clickhouse
@pytest.mark.parametrize("level", productivity.LEVELS)
def test_annotation_speed_matches_the_definition(loaded, level):
    store, events = loaded
    columns, rows = productivity.speed(store.client, store.spec, level)
    key = {"job": "job_id", "task": "task_id", "project": "project_id", "org": "org_id"}[level]
    assert columns[:3] == ["user_id", "day", key]
    got = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
    want = speed_oracle(events, level)
    assert got.keys() == want.keys()
    for k, row in want.items():
        assert got[k][:6] == row[:6], k
        assert got[k][6] == pytest.approx(row[6]) if row[6] is not None else got[k][6] is None
    # the cases the stream was written for are there
    assert any(r[3] < 0 for r in want.values())  # deletions outweigh creations
    assert any(r[4] < 0 for r in want.values())  # a negative sum of tracks diffs


@pytest.mark.clickhouse
def test_annotation_speed_filters_and_days(loaded):
    store, events = loaded
    first = _day(BASE)
    _, rows = productivity.speed(store.client, store.spec, "job", user_id="2", from_day=str(first),
                                 to_day=str(first))
    want = {k: v for k, v in speed_oracle(events, "job").items() if k[0] == 2 and k[1] == first}
    assert {(r[0], r[1], r[2]): r[3] for r in rows} == {k: v[0] for k, v in want.items()}
    with pytest.raises(productivity.ProductivityError, match="level"):
        productivity.speed(store.client, store.spec, "label")
    with pytest.raises(productivity.ProductivityError, match="to"):
        productivity.speed(store.client, store.spec, to_day="yesterday")


@pytest.mark.clickhouse
def test_review_cycles_match_the_definition(loaded):
    store, events = loaded
    columns, rows = productivity.reviews(store.client, store.spec, "job")
    got = {r[0]: dict(zip(columns, r)) for r in rows}
    want = reviews_oracle(events)
    assert set(got) == set(want)
    for job, fig in want.items():
        for name, value in fig.items():
            assert got[job][name] == value, (job, name)
    assert want[11]["rejections"] == 2 and want[11]["first_pass"] is False and want[12]["first_pass"] is True
    for per, who in (("annotator", "annotator"), ("reviewer", "reviewer")):
        columns, rows = productivity.reviews(store.client, store.spec, per)
        assert {r[0]: (r[1], r[2], pytest.approx(r[3])) for r in rows} == rates_oracle(want, who), per


@pytest.mark.clickhouse
@pytest.mark.parametrize("by_project", (False, True))
def test_timesheet_matches_the_working_time_rule(loaded, by_project):
    store, events = loaded
    columns, rows = productivity.timesheet(store.client, store.spec, by_project)
    n = 4 if by_project else 3
    got = {tuple(r[i] for i in (0, 2, 3)[: n - 1]): r[n] for r in rows}
    assert got == timesheet_oracle(events, by_project)
    assert all(r[1] == f"user{r[0]}" for r in rows)
    # org 7's timesheet keeps only the time credited to its jobs
    _, rows = productivity.timesheet(store.client, store.spec, True, org_id=7)
    assert {r[3] for r in rows} == {1001}


# --- timesheets over HTTP and from the CLI -------------------------------------------------

def call(srv, path: str, secret: str | None = None):
    import http.client

    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
    conn.request("GET", path, headers={"Authorization": f"Bearer {secret}"} if secret else {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), body


def read_csv(body: bytes):
    import csv
    import io

    rows = list(csv.reader(io.StringIO(body.decode())))
    return rows[0], rows[1:]


SECRETS = {"lead": "lead-secret-0123456789", "org7": "org7-secret-0123456789",
           "user1": "user1-secret-0123456789", "ingest": "ingest-secret-0123456789"}


def tokens():
    from cvat_analytics.service.access import Principal, Token

    def token(name, permissions, forced=None):
        return Token(SECRETS[name].encode(), Principal(name, frozenset(permissions), forced or {}))

    return [token("lead", {"export"}), token("org7", {"export"}, {"org_id": 7}),
            token("user1", {"export"}, {"user_id": 1}), token("ingest", {"ingest"})]


@pytest.mark.clickhouse
def test_timesheet_route_permissions_forced_filters_and_csv(loaded, make_served):
    store, events = loaded
    srv = make_served(spec=store.spec, tokens=tokens(), export=True)
    want = timesheet_oracle(events)
    status, headers, body = call(srv, "/api/timesheet", SECRETS["lead"])
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="timesheet_start_end.csv"'
    header, rows = read_csv(body)  # what a spreadsheet reader gets: one row per user and day
    assert header == ["user_id", "user_name", "day", "working_time_ms", "hours"]
    assert {(int(r[0]), dt.date.fromisoformat(r[2])): int(r[3]) for r in rows} == want
    assert all(float(r[4]) == round(int(r[3]) / 3_600_000, 2) for r in rows)
    # who may: no token 401, a token without export 403
    assert call(srv, "/api/timesheet")[0] == 401
    assert call(srv, "/api/timesheet", SECRETS["ingest"])[0] == 403
    # forced filters: user 1 sees only user 1, asking for another user is 403
    status, _, body = call(srv, "/api/timesheet", SECRETS["user1"])
    assert status == 200 and {r[0] for r in read_csv(body)[1]} == {"1"}
    status, _, body = call(srv, "/api/timesheet?user_id=2", SECRETS["user1"])
    assert status == 403 and b"user_id=2" in body
    # org 7 sees the time on its jobs only, by project
    status, _, body = call(srv, "/api/timesheet?by=project", SECRETS["org7"])
    header, rows = read_csv(body)
    assert status == 200 and header[3] == "project_id" and {r[3] for r in rows} == {"1001"}
    assert call(srv, "/api/timesheet?org_id=8", SECRETS["org7"])[0] == 403
    # days and bad parameters
    first = str(_day(BASE))
    status, _, body = call(srv, f"/api/timesheet?from={first}&to={first}", SECRETS["lead"])
    assert {r[2] for r in read_csv(body)[1]} == {first}
    for bad, named in (("from=yesterday", b"from"), ("to=2024-02-30", b"to"), ("user_id=-1", b"user_id"),
                       ("by=label", b"by"), ("label_id=3", b"label_id"),
                       (f"from={first}&to=1999-01-01", b"from")):
        status, _, body = call(srv, f"/api/timesheet?{bad}", SECRETS["lead"])
        assert status == 400 and named in body, bad


@pytest.mark.clickhouse
def test_timesheet_route_limits_name_the_spec_key(loaded, make_served):
    import copy

    store, events = loaded
    n_rows = len(timesheet_oracle(events))
    spec = copy.deepcopy(store.spec)
    spec["embedded"]["timesheet"]["max_rows"] = n_rows - 1
    srv = make_served(spec=spec, export=True)
    status, _, body = call(srv, "/api/timesheet")
    assert status == 400 and json.loads(body)["limit"] == "embedded.timesheet.max_rows"
    status, _, body = call(srv, f"/api/timesheet?user_id=1")  # fewer rows: within the limit
    assert status == 200
    full = call(make_served(spec=store.spec, export=True), "/api/timesheet")[2]
    for max_bytes, allowed in ((len(full), True), (len(full) - 1, False)):  # the whole CSV or nothing
        spec = copy.deepcopy(store.spec)
        spec["embedded"]["timesheet"]["max_bytes"] = max_bytes
        status, _, body = call(make_served(spec=spec, export=True), "/api/timesheet")
        assert (status, body) == (200, full) if allowed else status == 400
    assert status == 400 and json.loads(body)["limit"] == "embedded.timesheet.max_bytes"


@pytest.mark.clickhouse
def test_a_timesheet_asked_while_one_runs_is_429_at_once(loaded, make_served):
    """One timesheet at a time: a request that finds one running answers 429 naming the limit at
    once, instead of queueing on the handle (each waiting request held a connection of
    embedded.max_connections for up to max_seconds per timesheet ahead of it)."""
    import threading

    store, _ = loaded
    srv = make_served(spec=store.spec, export=True)
    running = srv.routes.find("GET", "/api/timesheet").handler._lock  # held as a running timesheet holds it
    running.acquire()
    threading.Timer(5, running.release).start()
    started = time.monotonic()
    status, headers, body = call(srv, "/api/timesheet")
    assert status == 429 and time.monotonic() - started < 2, (status, time.monotonic() - started)
    assert json.loads(body)["limit"] == "embedded.timesheet.max_seconds" and headers["Retry-After"] == "1"
    time.sleep(5.5 - (time.monotonic() - started))  # the running one done: the next is served
    assert call(srv, "/api/timesheet")[0] == 200


def test_timesheet_csv_keeps_formulas_out_of_spreadsheets():
    header, rows = read_csv(productivity.timesheet_csv(["user_id", "user_name"], [(1, "=HYPERLINK(1)"), (2, None),
                                                                                  (3, "-2+3"), (4, "ann, \"x\"")]))
    assert rows == [["1", "'=HYPERLINK(1)"], ["2", ""], ["3", "'-2+3"], ["4", 'ann, "x"']]


@pytest.mark.clickhouse
def test_timesheet_command_writes_the_same_csv(loaded, tmp_path):
    from cvat_analytics import cli

    store, events = loaded
    out = tmp_path / "sheet.csv"
    assert cli.main(["timesheet", "--spec", str(store.spec_path), "--dsn", store.dsn, "--by-project",
                     "-o", str(out)]) == 0
    header, rows = read_csv(out.read_bytes())
    assert header == ["user_id", "user_name", "day", "project_id", "working_time_ms", "hours"]
    assert {(int(r[0]), dt.date.fromisoformat(r[2]), int(r[3])): int(r[4]) for r in rows} == \
        timesheet_oracle(events, by_project=True)
    assert cli.main(["timesheet", "--spec", str(store.spec_path), "--dsn", store.dsn, "--from", "June"]) == 2
    assert not (tmp_path / ".sheet.csv.partial").exists()


# --- the dashboard -------------------------------------------------------------------------

def _dashboard_numbers(store, sel_from, sel_to, variables=None, forced=None):
    from cvat_analytics.dashboards import Dashboards, all_selected, interval_for
    from cvat_analytics_generator import grafana
    from cvat_analytics_generator.grafana_macros import expand

    d = grafana.load("productivity", store.spec)
    chosen = dict(all_selected(d), **(variables or {}))
    settings = {"additional_table_filters": Dashboards(lambda: store.client, store.spec).forced_filters(forced)} \
        if forced else {}
    out = {}
    for p in d["panels"]:
        result = store.client.query(expand(p["sql"], sel_from, sel_to, interval_for(sel_from, sel_to), chosen),
                                    settings=settings)
        out[p["title"]] = (list(result.column_names), [tuple(r) for r in result.result_rows])
    return d, out


@pytest.mark.clickhouse
def test_dashboard_panels_show_the_same_figures(loaded):
    """Every panel runs in Grafana's expansion, and its figures are the module's (so the oracle's)."""
    store, events = loaded
    sel_from = dt.datetime.combine(_day(BASE), dt.time(), dt.timezone.utc)
    sel_to = sel_from + dt.timedelta(days=2) - dt.timedelta(milliseconds=1)
    d, panels = _dashboard_numbers(store, sel_from, sel_to)
    assert d["uid"] == store.spec["dashboards"]["productivity"]
    assert all(rows for _, rows in panels.values()), [t for t, (_, rows) in panels.items() if not rows]
    # annotation speed per user and job over the two days
    columns, rows = panels["Annotation speed"]
    per_job = defaultdict(lambda: [0, 0, 0, 0])
    for (user, _day_, job), v in speed_oracle(events, "job").items():
        for i, x in enumerate((v[0], v[1], v[2], v[5])):
            per_job[(user, job)][i] += x
    got = {(r[0], r[2]): [r[3], r[4], r[5], round(r[7] * 3_600_000)] for r in rows}
    assert got == {k: v for k, v in per_job.items()}
    # review cycles per job, and the acceptance rates
    columns, rows = panels["Review cycles per job"]
    want = reviews_oracle(events)
    assert {r[0]: (r[1], r[5], r[8], r[9]) for r in rows} == {
        job: (w["rejections"], w["current_stage"], w["reviewer"], w["annotator"]) for job, w in want.items()}
    assert {int(r[0].rsplit("#", 1)[1]): r[1] for r in panels["First-pass acceptance per reviewer"][1]} == \
        {u: pytest.approx(v[2]) for u, v in rates_oracle(want, "reviewer").items()}
    # the timesheet
    assert {(r[0], r[2]): round(r[3] * 3_600_000) for r in panels["Timesheet"][1]} == timesheet_oracle(events)


@pytest.mark.clickhouse
def test_dashboard_filters_hold_on_every_panel(loaded):
    """One organisation selected: no panel shows a job of another (job 13 is outside org 7)."""
    from cvat_analytics_generator.grafana_macros import Variable

    store, _ = loaded
    sel_from = dt.datetime.combine(_day(BASE), dt.time(), dt.timezone.utc)
    _, panels = _dashboard_numbers(store, sel_from, sel_from + dt.timedelta(days=2),
                                   {"organizations": Variable(["7"])})
    assert {r[2] for r in panels["Annotation speed"][1]} == {11, 12}
    assert {r[0] for r in panels["Review cycles per job"][1]} == {11, 12}
    _, panels = _dashboard_numbers(store, sel_from, sel_from + dt.timedelta(days=2), {"users": Variable(["2"])})
    assert {r[0] for r in panels["Timesheet"][1]} == {2}


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_a_state_refresh_that_fails_writes_nothing_and_the_next_run_takes_its_events(chdb_dsn, tmp_path):
    """300,000 users' new objects: the run's sets need more than a 64 MiB cap, so it fails before
    writing a row (they are sorted first): no log row, no state. With the cap back, the next
    run takes every one of those events."""
    import uuid

    from cvat_analytics.migrate import migrate
    from cvat_analytics_generator.spec import load_spec
    from tests.conftest import HOURLY_REFRESH, write_spec

    db = f"t_{uuid.uuid4().hex[:12]}"
    cap = {"working_time.refresh_max_memory_mb": 64, "working_time.refresh_spill_mb": 8}
    specs = []
    for name, extra in (("capped", cap), ("default", {})):
        (tmp_path / name).mkdir()
        specs.append(load_spec(write_spec(tmp_path / name, **{"clickhouse.database": db, **HOURLY_REFRESH, **extra})[1]))
    client = store_module.connect(chdb_dsn)
    refresh = [f"SYSTEM {action} VIEW `{db}`.productivity_refresh" for action in ("REFRESH", "WAIT")]
    log = f"SELECT count(), max(watermark) FROM `{db}`.productivity_refresh_log"
    # objects, and users whose name is right (two runs may each have folded in the same events)
    state = f"SELECT (SELECT sum(objects) FROM `{db}`.productivity_objects FINAL), " \
            f"(SELECT countIf(name = concat('user', toString(user_id - 1))) FROM (SELECT user_id, " \
            f"argMaxMerge(last_name) AS name FROM `{db}`.productivity_user_names GROUP BY user_id))"
    try:
        migrate(client, specs[0], log=lambda *_: None)
        for view in ("working_time_refresh_plan", "working_time_refresh"):
            client.command(f"SYSTEM STOP VIEW `{db}`.{view}")
        # one run over the empty store, ended: the run the view starts at creation can otherwise
        # end (and log) after `before` is read (seen in a fresh-clone run)
        for statement in refresh:
            client.command(statement)
        client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, user_name, job_id, count, obj_name) "
                       "SELECT 'create:shapes', 'server', now64(3) - toIntervalMillisecond(number), number + 1, "
                       "concat('user', toString(number)), number % 1000 + 1, 1, 'rectangle' FROM numbers(300000)")
        before = client.query(log).result_rows
        with pytest.raises(Exception, match="MEMORY_LIMIT_EXCEEDED"):
            for statement in refresh:
                client.command(statement)
        assert client.query(log).result_rows == before
        assert client.query(state).result_rows == [(0, 0)]
        migrate(client, specs[1], log=lambda *_: None)  # the cap back: 0026 applied again
        for statement in refresh:
            client.command(statement)
        assert client.query(state).result_rows == [(300000, 300000)]
        assert client.query(log).result_rows[0][1] > before[0][1]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


def shuffled_stream(seed):
    """Server events on the three jobs around midnight (so a day's and a job's figures span
    several runs): objects, state and stage changes, decisions, and creations at a decision's
    instant (not before it)."""
    rng = random.Random(seed)
    start = DAY - 7 * 60_000
    e = [server(start + rng.randrange(0, 60_000), "create:job", 9, j, obj_id=j) for j in JOBS]
    for _ in range(220):
        ts = start + 60_000 + rng.randrange(0, 14 * 60_000)
        ts -= ts % rng.choice((1, 1000, 60_000))  # events at one instant
        user, job = rng.randint(1, 4), rng.choice(list(JOBS))
        if rng.random() < 0.7:
            e.append(objects(ts, rng.choice(("create", "create", "update", "delete")), rng.choice(("tags", "shapes", "tracks")),
                             user, job, rng.randint(1, 6), rng.choice(("rectangle", "mask")),
                             diffs=[rng.randint(-5, 9) for _ in range(rng.randint(1, 3))]))
        else:
            field = rng.choice(("state", "stage"))
            values = ("in progress", "completed", "rejected") if field == "state" else (
                "annotation", "validation", "acceptance")
            e.append(job_change(ts, user, job, field, rng.choice(values), rng.choice(values)))
            if rng.random() < 0.3:
                e.append(objects(ts, "create", "shapes", rng.randint(1, 4), job, 2))
    return e


@pytest.mark.clickhouse
def test_the_state_gives_the_figures_of_the_events_after_every_run(chdb_dsn, tmp_path):
    """Random server events stored in three shuffled batches (later batches hold events of days
    and jobs earlier runs computed), with a run after each that takes only its batch (each batch
    is older than the commit margin when its run starts, so no run takes an earlier batch
    again): after every run each job's review figures and each user's objects per job and day
    (what the other shapes roll up) are the ones the same statements give from the events."""
    import uuid

    from cvat_analytics.migrate import migrate
    from cvat_analytics_generator.render import render_template
    from cvat_analytics_generator.spec import load_spec
    from tests.conftest import HOURLY_REFRESH, write_spec

    db = f"t_{uuid.uuid4().hex[:12]}"
    spec = load_spec(write_spec(tmp_path, **{"clickhouse.database": db, **HOURLY_REFRESH,
                                             "working_time.commit_margin_s": 10})[1])
    client = store_module.connect(chdb_dsn)

    def answers(from_events):
        return {template: sorted(client.query(render_template(
                    spec, f"clickhouse/queries/{template}.sql.j2", from_events=from_events, **shape),
                    parameters=productivity.params()).result_rows)
                for template, shape in (("productivity_reviews", {"per": "job"}),
                                        ("productivity_speed", {"level": "job"}))}

    try:
        migrate(client, spec, log=lambda *_: None)
        events = shuffled_stream(41)
        random.Random(5).shuffle(events)
        for i in range(3):
            store_module.insert_json_rows(client, db, _as_rows(events[i::3]))
            wt.wait_past_commit_margin(client, spec)
            wt.wait_current(client, spec)
            state, truth = answers(False), answers(True)
            for key in truth:
                assert truth[key] and state[key] == truth[key], (i, key)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


@pytest.mark.clickhouse
def test_forced_callers_read_the_state_of_their_organisation_or_their_own(loaded):
    """The state is filtered as the events are: a token forced to org 7 sees its jobs (11, 12),
    one forced to user 2 its own objects and time, and no job's review figures (those are
    every user's events on the job)."""
    store, events = loaded
    sel_from = dt.datetime.combine(_day(BASE), dt.time(), dt.timezone.utc)
    sel_to = sel_from + dt.timedelta(days=2)
    _, everyone = _dashboard_numbers(store, sel_from, sel_to)
    _, org = _dashboard_numbers(store, sel_from, sel_to, forced={"org_id": 7})
    assert {r[2] for r in org["Annotation speed"][1]} == {11, 12} < {r[2] for r in everyone["Annotation speed"][1]}
    assert {r[0] for r in org["Review cycles per job"][1]} == {11, 12}
    _, user = _dashboard_numbers(store, sel_from, sel_to, forced={"user_id": 2})
    assert {r[0] for r in user["Annotation speed"][1]} == {2} < {r[0] for r in everyone["Annotation speed"][1]}
    assert {r[0] for r in user["Timesheet"][1]} == {2}
    assert user["Review cycles per job"][1] == [] != everyone["Review cycles per job"][1]
    assert sum(r[1] for r in user["Objects by shape type"][1]) < sum(r[1] for r in everyone["Objects by shape type"][1])


@pytest.mark.clickhouse
def test_the_embedded_page_draws_the_dashboard(loaded):
    from cvat_analytics.dashboards import Dashboards

    store, _ = loaded
    first = _day(BASE)
    html = Dashboards(lambda: store.client, store.spec).dashboard_page(
        store.spec["dashboards"]["productivity"],
        {"from": [f"{first}T00:00:00Z"], "to": [f"{first + dt.timedelta(days=2)}T00:00:00Z"]})
    assert "Query failed" not in html
    for title in ("Objects per day", "Annotation speed", "Review cycles per job", "Timesheet"):
        assert title in html
    assert "no per-label split" in html  # said where a user looks for per-label figures


@pytest.mark.refresh
@pytest.mark.slow
@pytest.mark.clickhouse
def test_demo_traffic_fills_every_panel(store):
    """`make demo`'s traffic: annotation and review events, so no panel is empty."""
    from cvat_analytics import demo

    now = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    demo.run(20_000, days=7, seed=3, client=store.client, database=store.database,
             now_ms=int(now.timestamp() * 1000), err=open("/dev/null", "w"))
    wt.wait_current(store.client, store.spec)
    _, panels = _dashboard_numbers(store, now - dt.timedelta(days=7), now)
    assert [t for t, (_, rows) in panels.items() if not rows] == []
    columns, rows = productivity.reviews(store.client, store.spec, "job")
    jobs = [dict(zip(columns, r)) for r in rows]
    assert any(j["rejections"] >= 1 for j in jobs)
    assert {j["first_pass"] for j in jobs} >= {0, 1}  # accepted first time, and not
    assert all(j["reviewer"] != j["annotator"] for j in jobs if j["annotator"] is not None)
    columns, rows = productivity.speed(store.client, store.spec, "job")
    speeds = [dict(zip(columns, r)) for r in rows]
    assert any(s["deleted"] > 0 for s in speeds) and any(s["track_shapes_diff"] > 0 for s in speeds)
    assert any(s["objects_per_hour"] for s in speeds)


# --- working time with a cap on one collapsed event, beside CVAT's (issue #29 item 4) ------

CAP_S = 600
# user 1: a click, a change:frame of 2 hours 10 s later, a click inside it, a click 20 s after
# it ends. CVAT's rule: 10 s gap + 7200 s frame + 0 + 20 s gap = 7230 s. Capped at 600 s the
# frame ends at 610 s: 10 + 600 + 0 (the click at 60 s is inside) + 0 (the last click is
# 6620 s after the capped end: past the 100 s idle threshold) = 610 s.
# user 2: clicks at 0, 30 s, 50 s: 50 s either way (no collapsed event to cap).
CAP_DAY0 = 9 * H


def cap_stream():
    return [client(CAP_DAY0, 1, 11), client(CAP_DAY0 + 10_000, 1, 11, "change:frame", 2 * H),
            client(CAP_DAY0 + 60_000, 1, 11), client(CAP_DAY0 + 7_230_000, 1, 11),
            client(CAP_DAY0, 2, 12), client(CAP_DAY0 + 30_000, 2, 12), client(CAP_DAY0 + 50_000, 2, 12),
            server(CAP_DAY0, "create:job", 9, 11)]


CAP_WANT = {1: (7_230_000, 610_000), 2: (50_000, 50_000)}  # user -> (CVAT's rule, capped), by hand


@pytest.fixture(scope="module")
def capped(chdb_dsn, tmp_path_factory):
    """cap_stream() in a database of its own, under a spec with working_time.duration_cap_s."""
    import uuid

    from cvat_analytics.migrate import migrate
    from cvat_analytics_generator.spec import load_spec
    from tests.conftest import Store, write_spec

    _, path = write_spec(tmp_path_factory.mktemp("spec"), **{"clickhouse.database": f"t_{uuid.uuid4().hex[:12]}",
                                                             "working_time.duration_cap_s": CAP_S})
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    store = Store(chdb_dsn, spec, path, client)
    store_module.insert_json_rows(client, store.database, _as_rows(cap_stream()))
    wt.wait_current(client, spec)
    yield store
    client.command(f"DROP DATABASE IF EXISTS `{store.database}` SYNC")


@pytest.mark.clickhouse
def test_capped_working_time_is_reported_beside_cvats(capped):
    columns, rows = productivity.timesheet(capped.client, capped.spec)
    assert columns == ["user_id", "user_name", "day", "working_time_ms", "hours", "capped_working_time_ms",
                       "capped_hours", "duration_cap_s"]
    got = {r[0]: (r[3], r[5]) for r in rows}
    assert got == CAP_WANT
    assert all(r[2] == _day(BASE) and r[7] == CAP_S for r in rows)
    assert {r[0]: (r[4], r[6]) for r in rows}[1] == (round(7230 / 3600, 2), round(610 / 3600, 2))
    # by project and filtered, the same figures
    _, rows = productivity.timesheet(capped.client, capped.spec, True, user_id=1, org_id=7)
    assert [(r[0], r[3], r[4], r[6]) for r in rows] == [(1, 1001, 7_230_000, 610_000)]
    # a cap no event reaches gives CVAT's figure
    spec = {**capped.spec, "working_time": {**capped.spec["working_time"], "duration_cap_s": 3 * 3600}}
    _, rows = productivity.timesheet(capped.client, spec)
    assert {r[0]: r[5] for r in rows} == {u: w[0] for u, w in CAP_WANT.items()}


@pytest.mark.clickhouse
def test_capped_working_time_on_the_route_the_command_and_the_dashboard(capped, make_served, tmp_path):
    from cvat_analytics import cli

    status, _, body = call(make_served(spec=capped.spec, export=True), "/api/timesheet")
    header, rows = read_csv(body)
    assert status == 200 and header[3:] == ["working_time_ms", "hours", "capped_working_time_ms", "capped_hours",
                                            "duration_cap_s"]
    assert {int(r[0]): (int(r[3]), int(r[5])) for r in rows} == CAP_WANT and {r[7] for r in rows} == {str(CAP_S)}
    out = tmp_path / "sheet.csv"
    assert cli.main(["timesheet", "--spec", str(capped.spec_path), "--dsn", capped.dsn, "-o", str(out)]) == 0
    assert out.read_bytes() == body
    sel_from = dt.datetime.combine(_day(BASE), dt.time(), dt.timezone.utc)
    _, panels = _dashboard_numbers(capped, sel_from, sel_from + dt.timedelta(days=1) - dt.timedelta(milliseconds=1))
    columns, rows = panels["Timesheet"]
    assert columns == ["user_id", "user_name", "day", "hours", "capped_hours", "duration_cap_s"]
    assert {r[0]: (round(r[3] * H), round(r[4] * H), r[5]) for r in rows} == {
        u: (w[0], w[1], CAP_S) for u, w in CAP_WANT.items()}


@pytest.mark.clickhouse
def test_timesheet_memory_is_capped_naming_the_spec_key(loaded, make_served, tmp_path):
    import copy

    store, _ = loaded
    spec = copy.deepcopy(store.spec)
    spec["embedded"]["timesheet"]["max_memory_bytes"] = 1000  # below what any query needs
    status, _, body = call(make_served(spec=spec, export=True), "/api/timesheet")
    assert status == 400 and json.loads(body)["limit"] == "embedded.timesheet.max_memory_bytes", body
    with pytest.raises(Exception, match="MEMORY_LIMIT_EXCEEDED"):
        productivity.timesheet(store.client, spec)


@pytest.mark.clickhouse
def test_dashboard_panels_are_the_productivity_statements(loaded):
    """One source of truth: each speed, review and timesheet panel holds the statement the CLI
    runs (rendered with the dashboard's filters), and gives the module's figures."""
    from cvat_analytics_generator import grafana

    store, _ = loaded
    d = grafana.load("productivity", store.spec)
    sql = {p["title"]: p["sql"] for p in d["panels"]}
    raw, db = grafana._read(grafana.DEFINITIONS / "productivity.yaml"), grafana.db_name(store.spec)
    ctx = {"db": db, **{k: " AND ".join(raw[k]).replace("{{ db }}", db) for k in ("filters", "job_filters")}}
    for title, (template, shape) in {
            "Annotation speed": ("productivity_speed", {"level": "job"}),
            "Review cycles per job": ("productivity_reviews", {"per": "job"}),
            "First-pass acceptance per annotator": ("productivity_reviews", {"per": "annotator"}),
            "First-pass acceptance per reviewer": ("productivity_reviews", {"per": "reviewer"}),
            "Timesheet": ("productivity_timesheet", {})}.items():
        statement = grafana.shared_query(store.spec, ctx, template, **shape)
        assert "{from_day:Date}" not in statement and "$__fromTime" in statement
        assert statement in sql[title], title
    # and the figures agree with the module's over the same whole days
    first = _day(BASE)
    sel_from = dt.datetime.combine(first, dt.time(), dt.timezone.utc)
    _, panels = _dashboard_numbers(store, sel_from, sel_from + dt.timedelta(days=2) - dt.timedelta(milliseconds=1))
    to = str(first + dt.timedelta(days=1))
    for per in ("annotator", "reviewer"):
        _, rows = productivity.reviews(store.client, store.spec, per, from_day=str(first), to_day=to)
        got = {int(r[0].rsplit("#", 1)[1]): (pytest.approx(r[1]), r[2])
               for r in panels[f"First-pass acceptance per {per}"][1]}
        assert got == {r[0]: (r[3], r[1]) for r in rows}, per
    _, rows = productivity.reviews(store.client, store.spec, "job", from_day=str(first), to_day=to)
    assert {r[0]: (r[1], r[9]) for r in panels["Review cycles per job"][1]} == {r[0]: (r[4], r[13]) for r in rows}


def test_review_statements_compute_the_jobs_once():
    """The per-job form (and the rates) read the jobs once: productivity_jobs, or, from the
    events, in one pass (the annotator from the same GROUP BY, not from a second copy of the
    jobs subquery joined to the events; two disjoint reads feed it: the stage changes with
    their payload, the rest without)."""
    from cvat_analytics_generator.render import render_template
    from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

    spec = load_spec(DEFAULT_SPEC)
    for per in productivity.REVIEWS_PER:
        sql = render_template(spec, "clickhouse/queries/productivity_reviews.sql.j2", per=per)
        assert sql.count("FROM `cvat`.productivity_jobs FINAL") == 1 and "`cvat`.events" not in sql, per
        sql = render_template(spec, "clickhouse/queries/productivity_reviews.sql.j2", per=per, from_events=True)
        assert sql.count("GROUP BY job_id") == 1 and sql.count("FROM `cvat`.events") == 2, per


@pytest.mark.clickhouse
def test_bench_times_each_panel_against_the_same_question_from_raw_events(loaded):
    """`make bench`'s Productivity figures: each panel (reading the state the engine keeps) is
    timed beside the same question from the raw events, and both answer the same."""
    from cvat_analytics.bench.panels import _productivity_panels

    store, _ = loaded
    figures = _productivity_panels({"now_ms": BASE + 3 * DAY, "runs": 1}, store.spec, store.client)
    by_title = {f["name"].split(" / ", 1)[1]: f for f in figures}
    assert len(by_title) == len(grafana_panels(store.spec))
    assert all(f["same_result"] and f["ours"] > 0 and f["cvat"] > 0 for f in figures)
    # every panel reads state the engine keeps (the objects, the jobs, the working time)
    assert all(f["baseline"] == "the same from raw events" for f in figures), by_title


def grafana_panels(spec):
    from cvat_analytics_generator import grafana

    return grafana.load("productivity", spec)["panels"]
