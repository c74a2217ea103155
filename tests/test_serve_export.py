"""CVAT's CSV export protocol on `serve`, over real HTTP on 127.0.0.1: the way CVAT's scripts use it."""
from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from urllib.parse import urlencode

import pytest

from cvat_analytics.export import ExportJobs, ExportLimits
from cvat_analytics.service import make_server
from cvat_analytics.service.access import Principal, Token
from tests.test_serve import cvat_batch

pytestmark = pytest.mark.clickhouse


def call(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def poll(srv, path: str, ready: int = 201) -> int:
    for _ in range(300):
        status, _, _ = call(srv, "GET", path)
        if status != 202:
            return status
        time.sleep(0.05)
    return status


def test_legacy_202_201_200_with_a_job_filter_and_the_attachment_name(server):
    rid = str(uuid.uuid4())
    events = cvat_batch(rid, 4)
    events[3]["job_id"] = 77
    assert call(server, "POST", "/", json.dumps(events).encode())[0] == 200
    status, _, body = call(server, "GET", "/api/events?job_id=77")
    assert status == 202
    query_id = json.loads(body)["query_id"]
    assert poll(server, f"/api/events?job_id=77&query_id={query_id}") == 201
    status, headers, csv = call(server, "GET", f"/api/events?job_id=77&query_id={query_id}&action=download")
    assert status == 200
    assert headers["Content-Disposition"].startswith('attachment; filename="logs_')
    lines = csv.decode().splitlines()
    assert lines[0].startswith("scope,obj_name,obj_id")
    assert len(lines) == 2 and ',77,' in lines[1]
    # the download forgot the job
    assert call(server, "GET", f"/api/events?job_id=77&query_id={query_id}")[0] == 404


def test_custom_filename_and_the_newer_flow(server):
    assert call(server, "POST", "/", json.dumps(cvat_batch(str(uuid.uuid4()), 2)).encode())[0] == 200
    status, _, body = call(server, "GET", "/api/events?filename=mine.csv")
    query_id = json.loads(body)["query_id"]
    poll(server, f"/api/events?filename=mine.csv&query_id={query_id}")
    status, headers, _ = call(server, "GET", f"/api/events?query_id={query_id}&action=download&filename=mine.csv")
    assert status == 200 and 'filename="mine.csv"' in headers["Content-Disposition"]

    status, _, body = call(server, "POST", "/api/events/export?user_id=2")
    assert status == 202
    rq_id = json.loads(body)["rq_id"]
    for _ in range(300):
        status, _, body = call(server, "GET", f"/api/requests/{rq_id}")
        if json.loads(body)["status"] == "finished":
            break
        time.sleep(0.05)
    result_url = json.loads(body)["result_url"]
    assert result_url.startswith(server.url)
    status, _, csv = call(server, "GET", result_url[len(server.url):])
    assert status == 200 and len(csv.decode().splitlines()) == 3


@pytest.mark.parametrize("query, parameter", [
    ({"job_id": "1 OR 1=1"}, "job_id"), ({"org_id": "1; DROP TABLE events"}, "org_id"),
    ({"user_id": "-3"}, "user_id"), ({"from": "yesterday"}, "from"),
    ({"from": "2026-02-01", "to": "2026-01-01"}, "from"), ({"query_id": str(uuid.uuid4()), "action": "delete"}, "action"),
])
@pytest.mark.slow
def test_bad_parameters_answer_400_naming_them_and_the_table_is_intact(server, store, query, parameter):
    status, _, body = call(server, "GET", "/api/events?" + urlencode(query))
    assert status == 400, body
    assert parameter in json.loads(body)["detail"]
    assert int(store.client.command(f"EXISTS TABLE `{store.database}`.events")) == 1


def test_unknown_query_id_is_404(server):
    assert call(server, "GET", f"/api/events?query_id={uuid.uuid4()}")[0] == 404


def wait_finished(srv, rq_id: str, headers: dict | None = None) -> dict:
    for _ in range(300):
        status, _, body = call(srv, "GET", f"/api/requests/{rq_id}", headers=headers)
        assert status == 200, body
        request = json.loads(body)
        if request["status"] in ("finished", "failed"):
            return request
        time.sleep(0.05)
    raise AssertionError(f"{rq_id} did not finish")


def test_download_again_until_expiry_then_cancel(server):
    assert call(server, "POST", "/", json.dumps(cvat_batch(str(uuid.uuid4()), 3)).encode())[0] == 200
    rq_id = json.loads(call(server, "POST", "/api/events/export")[2])["rq_id"]
    request = wait_finished(server, rq_id)
    assert request["expiry_date"] > request["finished_date"]
    path = request["result_url"][len(server.url):]
    first = call(server, "GET", path)
    second = call(server, "GET", path)  # a broken transfer can be retried
    assert first[0] == second[0] == 200 and first[2] == second[2] and len(first[2].splitlines()) == 4
    assert call(server, "GET", f"/api/requests/{rq_id}")[0] == 200
    listed = json.loads(call(server, "GET", "/api/requests")[2])
    assert listed["count"] == 1 and listed["results"][0]["id"] == rq_id and listed["next"] is None
    assert call(server, "POST", f"/api/requests/{rq_id}/cancel")[0] == 200
    assert call(server, "GET", path)[0] == 404 and call(server, "GET", f"/api/requests/{rq_id}")[0] == 404
    assert list(server.export_directory.iterdir()) == []


def test_result_url_names_the_host_the_caller_used(store, make_served):
    spec = json.loads(json.dumps(store.spec))
    spec["embedded"]["allowed_hosts"] = ["analytics.example:9000", "cvat.example.org"]
    srv = make_served(spec=spec, export=True)
    rq_id = json.loads(call(srv, "POST", "/api/events/export")[2])["rq_id"]
    wait_finished(srv, rq_id)
    status, _, body = call(srv, "GET", f"/api/requests/{rq_id}",
                           headers={"Host": "analytics.example:9000", "X-Forwarded-Host": "evil.example",
                                    "X-Forwarded-Proto": "https"})
    # not from a trusted proxy: the forwarded headers are ignored
    assert json.loads(body)["result_url"] == f"http://analytics.example:9000/api/events/download?rq_id={rq_id}"
    # A Host that is not one of serve's names never gets that far (421, origins.py).
    assert call(srv, "GET", f"/api/requests/{rq_id}", headers={"Host": "a b/c"})[0] == 421

    spec["embedded"]["trusted_proxies"] = ["127.0.0.0/8"]
    proxied = make_served(spec=spec, export=True)
    rq_id = json.loads(call(proxied, "POST", "/api/events/export")[2])["rq_id"]
    wait_finished(proxied, rq_id)
    body = call(proxied, "GET", f"/api/requests/{rq_id}",
                headers={"X-Forwarded-Host": "cvat.example.org", "X-Forwarded-Proto": "https"})[2]
    assert json.loads(body)["result_url"] == f"https://cvat.example.org/api/events/download?rq_id={rq_id}"


SECRETS = {"a": "a" * 24, "b": "b" * 24}
TWO_CALLERS = [Token(SECRETS["a"].encode(), Principal("caller-a", frozenset({"export"}))),
               Token(SECRETS["b"].encode(), Principal("caller-b", frozenset({"export"})))]


def auth(name: str) -> dict:
    return {"Authorization": f"Token {SECRETS[name]}"}


@pytest.fixture
def gated(store, tmp_path):
    """`serve` whose exports wait for `gate` before reading: a flood stays queued."""
    gate = threading.Event()

    class Gated:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            gate.wait(30)
            return getattr(self.client, name)

    def start(limits: ExportLimits, tokens=None):
        jobs = ExportJobs(lambda: Gated(store.client), store.spec, tmp_path / "gated", limits=limits)
        srv = make_server(store.client, store.spec, "127.0.0.1", 0, store.dsn, tokens=tokens, jobs=jobs)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append((srv, jobs))
        return srv

    started: list = []
    yield start, gate
    gate.set()
    for srv, jobs in started:
        srv.stop()
        jobs.shutdown()


def test_an_export_flood_is_429_with_retry_after_naming_the_limit(gated):
    start, gate = gated
    srv = start(ExportLimits(max_jobs=3, max_jobs_per_caller=2), tokens=TWO_CALLERS)
    answers = [call(srv, "POST", "/api/events/export", headers=auth("a")) for _ in range(20)]
    assert [a[0] for a in answers[:2]] == [202, 202]
    assert {a[0] for a in answers[2:]} == {429}
    status, headers, body = answers[2]
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["limit"] == "embedded.export.max_jobs_per_caller"
    assert "embedded.export.max_jobs_per_caller" in json.loads(body)["detail"]
    # the legacy flow counts too
    assert call(srv, "GET", "/api/events", headers=auth("a"))[0] == 429
    # another caller gets the one slot left overall, then the overall limit
    assert call(srv, "POST", "/api/events/export", headers=auth("b"))[0] == 202
    status, headers, body = call(srv, "POST", "/api/events/export", headers=auth("b"))
    assert status == 429 and json.loads(body)["limit"] == "embedded.export.max_jobs" and headers["Retry-After"]
    # each caller lists only its own requests; cancelling frees a slot
    mine = json.loads(call(srv, "GET", "/api/requests", headers=auth("a"))[2])
    assert mine["count"] == 2 and {r["owner"]["username"] for r in mine["results"]} == {"caller-a"}
    first = json.loads(answers[0][2])["rq_id"]
    assert call(srv, "POST", f"/api/requests/{first}/cancel", headers=auth("b"))[0] == 404  # not b's
    assert call(srv, "POST", f"/api/requests/{first}/cancel", headers=auth("a"))[0] == 200
    assert call(srv, "POST", "/api/events/export", headers=auth("a"))[0] == 202
    gate.set()


def test_a_failed_export_names_the_request_not_clickhouses_text(store, tmp_path, caplog):
    class Broken:
        def query(self, *a, **k):
            raise RuntimeError("Code: 241. DB::Exception: Memory limit exceeded: /var/lib/secret/path")

    jobs = ExportJobs(lambda: Broken(), store.spec, tmp_path / "broken")
    srv = make_server(store.client, store.spec, "127.0.0.1", 0, store.dsn, tokens=[], jobs=jobs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rq_id = json.loads(call(srv, "POST", "/api/events/export")[2])["rq_id"]
        request = wait_finished(srv, rq_id)
        status, _, body = call(srv, "GET", f"/api/events/download?rq_id={rq_id}")
        assert status == 500 and rq_id in body.decode()
        for text in (body.decode(), request["message"]):
            assert "Memory limit" not in text and "/var/lib" not in text
        logged = [r for r in caplog.records if r.name == "cvat_analytics.export" and r.levelname == "ERROR"]
        assert any("Memory limit exceeded" in r.getMessage() for r in logged)  # the log has it
    finally:
        srv.stop()
        jobs.shutdown()
