"""CVAT's own SDK (cvat-sdk 2.80.0, unmodified) against a live `serve`: both export flows
through its EventsApi/RequestsApi and its downloader, every filter, access tokens as the
SDK sends them (`Authorization: Bearer` for an access token, `Token` for an api key)."""
from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from cvat_sdk.api_client import ApiClient, Configuration, exceptions
from cvat_sdk.core.client import AccessTokenCredentials, Client, Config
from cvat_sdk.core.downloading import Downloader

from cvat_analytics.service.access import Principal, Token
from tests.test_serve_export import call

pytestmark = pytest.mark.clickhouse

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
SECRETS = {"admin": "s" * 32, "org7": "o" * 32, "ingest": "i" * 32}
TOKENS = [
    Token(SECRETS["admin"].encode(), Principal("admin", frozenset({"export"}))),
    Token(SECRETS["org7"].encode(), Principal("org-7", frozenset({"export"}), {"org_id": 7})),
    Token(SECRETS["ingest"].encode(), Principal("cvat-server", frozenset({"ingest"}))),
]


def event(hours_ago: float, **ids) -> dict:
    at = NOW - timedelta(hours=hours_ago)
    return {"scope": "update:job", "source": "server", "timestamp": f"{at.timestamp():.6f}",
            "obj_name": "state", "obj_val": "done", **ids}


# one event per distinguishing value, so each filter selects a known set
EVENTS = [
    event(1, org_id=7, project_id=1, task_id=10, job_id=100, user_id=5),
    event(2, org_id=7, project_id=1, task_id=11, job_id=110, user_id=6),
    event(3, org_id=8, project_id=2, task_id=20, job_id=200, user_id=5),
    event(24 * 40, org_id=8, project_id=2, task_id=20, job_id=201, user_id=7),  # older than 30 days
]


@pytest.fixture
def served(make_served):
    srv = make_served(tokens=TOKENS, export=True)
    status, _, body = call(srv, "POST", "/", json.dumps(EVENTS).encode(),
                           headers={"Authorization": f"Bearer {SECRETS['ingest']}"})
    assert status == 200, body
    return srv


@pytest.fixture
def client(served):
    with Client(served.url, check_server_version=False, config=Config(status_check_period=0.05)) as c:
        c.login(AccessTokenCredentials(SECRETS["admin"]))  # the SDK sends it as Authorization: Bearer
        yield c


def rows(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def job_ids(found: list[dict]) -> list[int]:
    return sorted(int(r["job_id"]) for r in found)


@pytest.mark.parametrize("query, expected", [
    ({}, [100, 110, 200, 201]),  # no from: the beginning (CVAT 2.36+), no to: now
    ({"org_id": 7}, [100, 110]),
    ({"project_id": 2}, [200, 201]),
    ({"task_id": 20}, [200, 201]),
    ({"job_id": 110}, [110]),
    ({"user_id": 5}, [100, 200]),
    ({"from": NOW - timedelta(hours=2, minutes=30)}, [100, 110]),
    ({"to": NOW - timedelta(hours=2, minutes=30)}, [200, 201]),  # to alone: nothing lost before it
    ({"from": NOW - timedelta(hours=2), "to": NOW - timedelta(hours=2)}, [110]),  # both ends included
])
@pytest.mark.slow
def test_new_flow_through_events_api_and_requests_api_every_filter(client, tmp_path, query, expected):
    kwargs = {("_from" if k == "from" else k): v for k, v in query.items()}
    rq, response = client.api_client.events_api.create_export(**kwargs)
    assert response.status == 202
    request, _ = client.wait_for_completion(rq.rq_id)  # RequestsApi.retrieve, parsed into its models
    assert request.status.value == "finished" and request.expiry_date > request.finished_date
    assert request.result_url.startswith(client.api_map.host)
    out = Downloader(client).download_file(request.result_url, tmp_path / "events.csv")
    assert job_ids(rows(out)) == expected


def test_the_sdk_downloader_end_to_end_and_the_requests_list(client, tmp_path):
    endpoint = client.api_client.events_api.create_export_endpoint
    out = Downloader(client).prepare_and_download_file_from_endpoint(
        endpoint, tmp_path / "org7.csv", query_params={"org_id": 7, "filename": "org7.csv"})
    assert job_ids(rows(out)) == [100, 110]
    page, _ = client.api_client.requests_api.list(page_size=1)
    assert page.count == 1 and page.next is None and page.results[0].operation.type == "export:events"
    rq_id = page.results[0].id
    again = Downloader(client).download_file(page.results[0].result_url, tmp_path / "again.csv")
    assert again.read_bytes() == out.read_bytes()  # kept until expiry_date
    client.api_client.requests_api.create_cancel(rq_id)
    with pytest.raises(exceptions.NotFoundException):
        client.api_client.requests_api.retrieve(rq_id)


def test_legacy_flow_through_events_api_list(client):
    events = client.api_client.events_api
    _, response = events.list(job_id=200, _parse_response=False)
    assert response.status == 202
    query_id = json.loads(response.data)["query_id"]
    for _ in range(200):
        _, response = events.list(job_id=200, query_id=query_id, _parse_response=False)
        if response.status == 201:
            break
        time.sleep(0.05)
    assert response.status == 201
    _, response = events.list(job_id=200, query_id=query_id, action="download", _parse_response=False)
    assert response.status == 200 and response.headers["Deprecation"]
    assert job_ids(list(csv.DictReader(io.StringIO(response.data.decode())))) == [200]


def test_tokens_as_the_sdk_sends_them(served, tmp_path):
    # an api key goes as "Authorization: Token <key>", as CVAT's own clients write it
    config = Configuration(host=served.url, api_key={"tokenAuth": SECRETS["org7"]})
    with ApiClient(config) as api:
        rq, _ = api.events_api.create_export()
        for _ in range(200):
            request, _ = api.requests_api.retrieve(rq.rq_id)
            if request.status.value == "finished":
                break
            time.sleep(0.05)
        # a forced filter: org 7's token sees only org 7, and may not ask for org 8
        assert request.operation.org_id == 7
        with pytest.raises(exceptions.ForbiddenException):
            api.events_api.create_export(org_id=8)
        # another token's request is not there for this one
        with Client(served.url, check_server_version=False) as admin:
            admin.login(AccessTokenCredentials(SECRETS["admin"]))
            with pytest.raises(exceptions.NotFoundException):
                admin.api_client.requests_api.retrieve(rq.rq_id)
    with ApiClient(Configuration(host=served.url, access_token="x" * 32)) as api:
        with pytest.raises(exceptions.UnauthorizedException):
            api.events_api.create_export()
    with ApiClient(Configuration(host=served.url, access_token=SECRETS["ingest"])) as api:
        with pytest.raises(exceptions.ForbiddenException):
            api.requests_api.list()
