"""One request must not fail the others it is stored with (group commit), over real sockets.

With `retention_days: 0` events of any age are taken, and the engine writes at most
`max_partitions_per_insert_block` (100) monthly partitions in one INSERT. A body past that
is refused alone; a group never holds more months than that; and a group whose INSERT
fails all the same is stored request by request, each still exactly once.
"""
from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
import threading

import pytest

from tests.test_serve import count

pytestmark = pytest.mark.clickhouse

SENDERS = 6
ROUNDS = 5
GOOD_MONTHS = 3  # each month a part written (and fsynced): kept few


def month_events(name: str, first: int, months: int) -> list[dict]:
    """One event a month for `months` months from month `first` (0 = 2000-01), request id `name`."""
    payload = json.dumps({"request": {"id": name}})
    events = []
    for m in range(first, first + months):
        at = dt.datetime(2000 + m // 12, m % 12 + 1, 15, 12, tzinfo=dt.timezone.utc)
        events.append({"scope": "update:task", "source": "server", "timestamp": f"{int(at.timestamp())}.5",
                       "task_id": 5, "user_id": 2, "payload": payload})
    return events


def keep_forever(store) -> dict:
    """The store migrated to retention_days: 0 (documented: events of any age are kept)."""
    from cvat_analytics.migrate import migrate

    spec = copy.deepcopy(store.spec)
    spec["clickhouse"]["retention_days"] = 0
    migrate(store.client, spec, log=lambda *_: None)
    return spec


def send_all(srv, bodies_by_sender: list[list[tuple[bytes, dict]]]) -> list[list[tuple[int, dict]]]:
    """Each sender posts its bodies one after another on one kept-alive connection (as Vector
    and CVAT's server do), all senders at once; the answers, per sender, in order."""
    answers: list[list] = [[] for _ in bodies_by_sender]
    barrier = threading.Barrier(len(bodies_by_sender))

    def send(i: int) -> None:
        conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
        barrier.wait()
        for body, headers in bodies_by_sender[i]:
            conn.request("POST", "/", body, {"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            answers[i].append((response.status, json.loads(response.read())))
        conn.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies_by_sender))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def groups_failed(srv) -> float:
    """Groups whose INSERT failed so far, as GET /metrics says (0 before such a metric existed)."""
    status, text = request_text(srv, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith("cvat_analytics_ingest_groups_failed_total "):
            return float(line.split()[1])
    return 0.0


def request_text(srv, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def good_and_poisoned(rounds: int = ROUNDS):
    """SENDERS - 2 senders of good bodies (GOOD_MONTHS months each, some sent twice: a retry), one more
    sending the first one's bodies at the same time (retries in flight together), and one
    sender of a body spanning 101 months, sent again and again as a retrying sender would."""
    senders = []
    for s in range(SENDERS - 2):
        bodies = []
        for r in range(rounds):
            body = json.dumps(month_events(f"good-{s}-{r}", (s * 12 + r) % 200, GOOD_MONTHS)).encode()
            bodies.append((body, {}))
            if r % 3 == 0:  # its retry, byte for byte: stored once
                bodies.append((body, {}))
        senders.append(bodies)
    senders.append(senders[0])
    poisoned = json.dumps(month_events("poisoned", 0, 101)).encode()
    senders.append([(poisoned, {})] * rounds)
    return senders


def assert_good_stored_once(store, answers, rounds: int = ROUNDS) -> None:
    for s in range(SENDERS - 1):
        statuses = [status for status, _ in answers[s]]
        assert statuses == [200] * len(answers[s]), (s, answers[s])
    for s in range(SENDERS - 2):
        for r in range(rounds):
            assert count(store, f"good-{s}-{r}") == GOOD_MONTHS, (s, r)
    assert count(store, "poisoned") == 0
    assert count(store) == (SENDERS - 2) * rounds * GOOD_MONTHS
    stored = sum(answer.get("stored", 0) for sender in answers[:-1] for _, answer in sender)
    assert stored == count(store)  # acknowledged as stored exactly as often as stored


def test_a_body_spanning_more_months_than_one_insert_takes_is_refused_alone_with_a_400_naming_the_limit(
        store, make_served):
    srv = make_served(spec=keep_forever(store))
    failed = groups_failed(srv)
    answers = send_all(srv, good_and_poisoned())
    assert_good_stored_once(store, answers)
    for status, answer in answers[-1]:  # refused at validation: a resend is refused the same way
        assert status == 400, answer
        assert (answer["index"], answer["field"]) == (100, "timestamp")
        assert "at most 100 calendar months" in answer["error"]
        assert "max_partitions_per_insert_block" in answer["error"]
    assert groups_failed(srv) == failed  # never reached the engine


def test_a_group_the_engine_refuses_is_stored_request_by_request_each_once(store, make_served):
    """As if validation had let the poisoned body through (serve's month limit lifted, the
    engine's kept): the group's INSERT fails, its requests are stored one by one; the
    good ones and their retries count once, the poisoned one gets the engine's reason."""
    srv = make_served(spec=keep_forever(store))
    commits = next(r.handler.commits for r in srv.routes.routes if r.path == "/")
    commits.max_months = 0  # no month limit in serve: only the engine's
    failed = groups_failed(srv)
    answers = send_all(srv, good_and_poisoned())
    assert_good_stored_once(store, answers)
    assert groups_failed(srv) > failed  # the poisoned body did fail groups, and nobody else
    for status, answer in answers[-1]:
        assert status == 400, answer
        assert "Too many partitions for single INSERT block (more than 100)" in answer["error"]
        assert "max_partitions_per_insert_block" in answer["error"]


def test_bodies_each_within_the_limit_never_form_a_group_past_it(store, make_served):
    """Four senders, each body spanning 51 months of its own (204 months in all): any two
    bodies together pass 100 months, so a group holding them would fail. Every body is stored,
    once, and no group's INSERT failed (groups are bounded by months, not rescued)."""
    srv = make_served(spec=keep_forever(store))
    failed = groups_failed(srv)
    rounds = 3
    senders = [[(json.dumps(month_events(f"wide-{s}-{r}", s * 51, 51)).encode(), {}) for r in range(rounds)]
               for s in range(4)]
    answers = send_all(srv, senders)
    for s in range(4):
        assert answers[s] == [(200, {"stored": 51})] * rounds, answers[s]
        for r in range(rounds):
            assert count(store, f"wide-{s}-{r}") == 51
    assert groups_failed(srv) == failed
