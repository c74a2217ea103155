"""GET /openapi.json: the document names every route of serve's table and nothing else,
and schemathesis finds no live answer that is a 5xx or breaks it."""
from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, Phase, given, settings

from cvat_analytics.service.openapi import PATHS, table_path

pytestmark = pytest.mark.clickhouse


def fetch_document(srv) -> dict:
    with urllib.request.urlopen(srv.url + "/openapi.json", timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_the_document_lists_exactly_the_route_table(make_served):
    srv = make_served(export=True, dashboards=True)
    document = fetch_document(srv)
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path): op.get("x-permission")
                  for path, ops in document["paths"].items() for method, op in ops.items()}
    routes = {(r.method, table_path(r.path, r.prefix, r.method)): r.permission for r in srv.routes.routes}
    routes |= {("HEAD", table_path(r.path, r.prefix, "GET")): r.permission
               for r in srv.routes.routes if r.method == "GET" and r.head}
    assert documented == routes  # same routes (HEAD where GET answers it), same permissions
    written = {(m.upper(), p) for p, ops in PATHS.items() for m in ops}
    assert {key for key in documented if key[0] != "HEAD"} == written  # nothing extra written


def test_a_server_without_export_or_dashboards_documents_neither(make_served):
    paths = fetch_document(make_served())["paths"]
    # On chdb, /clickhouse is always there: SQL reaches the store only through serve.
    assert set(paths) == {"/", "/health", "/metrics", "/openapi.json", "/clickhouse", "/clickhouse/{rest}"}


# No 5xx, and every status, content type, header and body as documented. (Not the checks
# that expect a schema-valid body to be accepted: an event's rules are stricter than its schema.)
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]
EXAMPLES = 25  # per operation: ~11 operations in well under a minute on one core


@pytest.mark.slow
def test_live_answers_keep_to_the_document(make_served):
    # schemathesis' pytest plugin does not load under this pytest; its strategies do the same work.
    srv = make_served(export=True, dashboards=True)
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route (and HEAD where GET answers it) but GET of the document itself, which
    # schemathesis leaves out.
    heads = sum(1 for r in srv.routes.routes if r.method == "GET" and r.head)
    assert len(operations) == len(srv.routes.routes) + heads - 1, " ".join(o.label for o in operations)
    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, phases=[Phase.explicit, Phase.generate])
        def answers_keep_to_the_document(case):
            case.call_and_validate(checks=CHECKS)

        answers_keep_to_the_document()
    answered = sum(s.value for family in srv.routes.metrics.requests.collect() for s in family.samples
                   if s.name.endswith("_total"))
    assert answered >= len(operations) * 10  # the examples really went over the wire


def test_a_foreign_host_answer_is_documented_on_every_route_but_ingest(make_served):
    paths = fetch_document(make_served())["paths"]
    assert "421" not in paths["/"]["post"]["responses"]
    assert all("421" in operation["responses"] for path, methods in paths.items()
               for method, operation in methods.items() if (path, method) != ("/", "post"))
