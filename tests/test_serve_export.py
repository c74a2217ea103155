"""CVAT's CSV export protocol on `serve`, over real HTTP on 127.0.0.1: the way CVAT's scripts use it."""
from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import urlencode

import pytest

from tests.test_serve import cvat_batch

pytestmark = pytest.mark.clickhouse


def call(srv, method: str, path: str, body: bytes | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
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
def test_bad_parameters_answer_400_naming_them_and_the_table_is_intact(server, store, query, parameter):
    status, _, body = call(server, "GET", "/api/events?" + urlencode(query))
    assert status == 400, body
    assert parameter in json.loads(body)["detail"]
    assert int(store.client.command(f"EXISTS TABLE `{store.database}`.events")) == 1


def test_unknown_query_id_is_404(server):
    assert call(server, "GET", f"/api/events?query_id={uuid.uuid4()}")[0] == 404
