"""The demo's traffic: what CVAT's UI and server send while a team annotates, user by user.

Per user, a timeline of annotation sessions over the last D days (see docs/cvat-compatibility.md,
"The event contract"):

- client events as CVAT's UI sends them: load:cvat with the platform payload, load:job,
  draw/drag/resize/delete:object, change:frame (durations; playback merged into one event with
  count > 1, as the UI compresses it), zoom:image, click:element, action:undo, save:job; payload
  carries client_id and is_active;
- idle breaks (longer than the 100 s idle threshold) and job switches;
- server events as CVAT's server writes them: create:project/task/job bursts share one request
  id; update:job is one row per changed field (obj_name=field, obj_val=new value,
  payload.old_value), jobs move to completed or rejected; on save, the annotation events of
  CVAT's handle_annotations_change (create/update/delete x tags/shapes/tracks, `count` objects,
  `obj_name` the shape type, payloads of object ids, tracks with visible_shapes_count_diff);
  a job's review decision (rejected, or accepted) is made by a reviewer, another user;
  create:cache_item when a job's chunks are prepared; a few send:exception with message and
  stack (server and client);
- send:working_time rows computed per 90 s batch of client events by CVAT's own loop
  (cvat_analytics/cvat_reference.py), the previous batch's last event carried over.

Events are dicts with CVAT's flat fields, `_ts` (epoch ms) for the time and `payload` a dict;
demo/wire.py turns them into what travels.
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Callable, Iterator

from ..cvat_reference import MAX_EVENT_DURATION_MS, compute_working_time_per_ids
from .world import Job, Project, Task, User, build_world

IDLE_MS = MAX_EVENT_DURATION_MS
BATCH_MS = 90_000
DEFAULT_DAYS = 7

SHAPES = ["rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton"]
BUTTONS = [("cvat-annotation-header-save-button", "Save"), ("cvat-player-next-button", "Next"),
           ("cvat-player-previous-button", "Previous"), ("cvat-annotation-header-undo-button", "Undo"),
           ("cvat-draw-rectangle-control", "Shape"), ("cvat-annotation-header-menu-button", "Menu")]
CLIENT_ERRORS = [
    ("Cannot read properties of undefined (reading 'points')", "canvasView.ts", 1123),
    ("Could not receive frame 42: Network Error", "frames.ts", 318),
    ("Request failed with status code 502", "server-proxy.ts", 457),
]
SERVER_ERRORS = [
    ("jobs", "annotations", "PUT", 500, "django.db.utils.OperationalError: database is locked"),
    ("tasks", "data", "GET", 500, "FileNotFoundError: [Errno 2] No such file or directory: '/home/django/data/data/7/raw'"),
    ("jobs", "retrieve", "GET", 504, "TimeoutError: chunk preparation timed out"),
]


class Demo:
    """Yields events (dicts with CVAT's flat fields; `_ts` = epoch ms) in per-user order."""

    def __init__(self, seed: int = 1, days: float = DEFAULT_DAYS, now_ms: int | None = None):
        self.rng = random.Random(seed)
        # Annotation and review details draw from their own generator, so the rest of the
        # traffic of a seed stays what it was before they were added.
        self.work_rng = random.Random(seed * 7919 + 29)
        self.next_object_id = 1
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.start_ms = self.now_ms - int(days * 86_400_000)
        world = build_world(self.rng)
        self.orgs, self.users, self.projects, self.owner = world.orgs, world.users, world.projects, world.owner

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- event builders -------------------------------------------------------
    def _user_cols(self, u: User) -> dict:
        return {"user_id": u.id, "user_name": u.name, "user_email": u.email,
                "org_id": u.org.id if u.org else None, "org_slug": u.org.slug if u.org else None}

    def _server(self, scope: str, ts: int, u: User, request_id: str, payload: dict | None = None,
                job: Job | None = None, task: Task | None = None, project: Project | None = None,
                **cols) -> dict:
        if job is not None:
            task = job.task
        if task is not None:
            project = task.project
        body = dict(payload or {})
        body["request"] = {"id": request_id, "user_agent": f"Mozilla/5.0 ({u.os}) {u.browser[0]}/{u.browser[1]}"}
        ev = {"scope": scope, "source": "server", "_ts": ts, "obj_name": None, "obj_id": None,
              "obj_val": None, "count": None, "duration": 0,
              "project_id": project.id if project else None, "task_id": task.id if task else None,
              "job_id": job.id if job else None, **self._user_cols(u),
              "payload": body, "access_token_id": None}
        ev.update(cols)
        return ev

    def _client(self, scope: str, ts: int, u: User, job: Job | None, payload: dict | None = None,
                **cols) -> dict:
        body = {"client_id": u.client_id, "is_active": self.rng.random() > 0.03}
        if job is not None:
            body.update(job_id=job.id, task_id=job.task.id, project_id=job.task.project.id)
        body.update(payload or {})
        ev = {"scope": scope, "source": "client", "_ts": ts, "obj_name": None, "obj_id": None,
              "obj_val": None, "count": None, "duration": 0,
              "project_id": job.task.project.id if job else None, "task_id": job.task.id if job else None,
              "job_id": job.id if job else None, **self._user_cols(u), "payload": body,
              "access_token_id": None}
        ev.update(cols)
        return ev

    def setup_events(self) -> Iterator[dict]:
        """Creation bursts at the start of the window: one request id per burst."""
        rng, ts = self.rng, self.start_ms
        for org in self.orgs:
            owner = next((u for u in self.users if u.org is org), self.owner)
            ts += rng.randint(1000, 60_000)
            yield self._server("create:organization", ts, owner, self._uuid(), {"slug": org.slug},
                               obj_id=org.id, obj_name=org.slug)
            for u in self.users:
                if u.org is org and u is not owner:
                    ts += rng.randint(500, 5000)
                    yield self._server("create:membership", ts, owner, self._uuid(),
                                       {"role": "worker", "is_active": True}, obj_id=u.id, obj_name=u.name)
        for p in self.projects:
            owner = next((u for u in self.users if u.org is p.org), self.owner)
            ts += rng.randint(5000, 120_000)
            yield self._server("create:project", ts, owner, self._uuid(), {"name": p.name, "status": "annotation"},
                               project=p, obj_id=p.id, obj_name=p.name)
            for t in p.tasks:
                ts += rng.randint(5000, 60_000)
                rid = self._uuid()  # the task, its jobs and its cache: one request
                yield self._server("create:task", ts, owner, rid, {"name": t.name, "mode": "annotation",
                                   "size": sum(j.frames for j in t.jobs)}, task=t, obj_id=t.id, obj_name=t.name)
                for j in t.jobs:
                    ts += rng.randint(1, 40)
                    yield self._server("create:job", ts, owner, rid, {"type": "annotation", "stage": "annotation",
                                       "state": "new", "frame_count": j.frames}, job=j, obj_id=j.id)
                ts += rng.randint(100, 3000)
                yield self._server("create:cache_item", ts, owner, rid,
                                   {"queue": "chunks", "cache_item": {"size": rng.randint(200_000, 9_000_000),
                                                                      "key": f"task_{t.id}_preview"}},
                                   task=t, obj_id=t.id)

    def _working_time(self, u: User, batch: list[dict], prev: dict | None) -> Iterator[dict]:
        """The send:working_time rows CVAT's server writes for one batch of client events."""
        def as_cvat(e: dict) -> dict:
            return {"scope": e["scope"], "timestamp": e["_ts"], "duration": e["duration"],
                    "job_id": e["job_id"], "task_id": e["task_id"], "project_id": e["project_id"]}

        per_ids = compute_working_time_per_ids(
            {"events": [as_cvat(e) for e in batch], "previous_event": as_cvat(prev) if prev else None}, ms=1)
        rid = self._uuid()
        for (job_id, task_id, project_id), item in per_ids.items():
            ts, ms = item["timestamp"], item["value"]
            if ms:
                yield {"scope": "send:working_time", "source": "server", "_ts": ts, "obj_name": None,
                       "obj_id": None, "obj_val": None, "count": 1, "duration": ms,
                       "project_id": project_id, "task_id": task_id, "job_id": job_id,
                       **self._user_cols(u), "access_token_id": None,
                       "payload": {"working_time": ms, "request": {"id": rid, "user_agent": "python-requests"}}}

    def session(self, u: User, t: int, end_ms: int) -> Iterator[dict]:
        """One sitting: open CVAT, work on a few jobs, with idle breaks; yields its events."""
        rng = self.rng
        client: list[dict] = []
        batch_state = {"start": None, "prev": None}
        out: list[dict] = []

        def emit(e):
            client.append(e)
            if batch_state["start"] is None:
                batch_state["start"] = e["_ts"]
            if e["_ts"] - batch_state["start"] >= BATCH_MS or e["scope"] == "save:job":
                flush()

        def flush():
            if client:
                out.extend(client)
                out.extend(self._working_time(u, client, batch_state["prev"]))
                batch_state["prev"] = client[-1]
                client.clear()
            batch_state["start"] = None

        w, h = rng.choice([(1920, 1080), (2560, 1440), (1366, 768), (3840, 2160)])
        emit(self._client("load:cvat", t, u, None, {
            "platform": {"engine": "Blink" if u.browser[0] != "Firefox" else "Gecko", "name": u.browser[0],
                         "version": u.browser[1], "os": u.os},
            "screen": {"width": w, "height": h}, "language": "en-US", "hardwareConcurrency": rng.choice([4, 8, 16]),
            "deviceMemory": rng.choice([4, 8]), "jsHeapSizeLimit": 4294705152,
            "location": "/tasks"}, duration=rng.randint(800, 4000)))
        for _ in range(rng.randint(1, 3)):
            if t >= end_ms:
                break
            job = rng.choice(u.jobs)
            t += rng.randint(2000, 20_000)
            emit(self._client("click:element", t, u, None, obj_name="cvat-job-item", obj_val="Open"))
            t += rng.randint(300, 3000)
            emit(self._client("load:job", t, u, job, duration=rng.randint(400, 6000), obj_val=str(job.frames)))
            frame = 0
            drawn = deleted = 0
            for _ in range(rng.randint(15, 120)):
                r = rng.random()
                if r < 0.04:  # an idle break: coffee, a meeting
                    t += rng.randint(IDLE_MS + 1, 1_800_000)
                else:
                    t += int(rng.expovariate(1 / 6000)) + 50
                if t >= end_ms:
                    break
                r = rng.random()
                if r < 0.30:
                    if rng.random() < 0.08:  # playback: compressed into one event
                        n = rng.randint(5, 40)
                        dur = n * rng.randint(90, 200)
                    else:
                        n, dur = 1, rng.randint(150, 2500)
                    frame = min(job.frames - 1, frame + n)
                    emit(self._client("change:frame", t, u, job, {"from": frame - n, "to": frame, "step": 1},
                                      count=n, duration=dur, obj_val=str(frame)))
                    t += dur
                elif r < 0.55:
                    drawn += 1
                    emit(self._client("draw:object", t, u, job, {"frame": frame},
                                      obj_name=rng.choice(SHAPES), duration=rng.randint(700, 9000), count=1))
                elif r < 0.67:
                    emit(self._client("drag:object", t, u, job, {"frame": frame}, obj_name=rng.choice(SHAPES)))
                elif r < 0.77:
                    emit(self._client("resize:object", t, u, job, {"frame": frame}, obj_name=rng.choice(SHAPES)))
                elif r < 0.82:
                    removed = rng.randint(1, 3)
                    deleted += removed
                    emit(self._client("delete:object", t, u, job, {"frame": frame}, count=removed))
                elif r < 0.88:
                    emit(self._client("zoom:image", t, u, job, {"frame": frame}, count=rng.randint(1, 6)))
                elif r < 0.92:
                    emit(self._client("action:undo", t, u, job, count=1, duration=rng.randint(5, 80),
                                      obj_val="Changed object"))
                elif r < 0.96:
                    cls, text = rng.choice(BUTTONS)
                    emit(self._client("click:element", t, u, job, obj_name=cls, obj_val=text))
                elif r < 0.997:
                    out.extend(self._save(u, job, t, drawn, emit, deleted))
                    drawn = deleted = 0
                else:
                    msg, fname, line = rng.choice(CLIENT_ERRORS)
                    emit(self._client("send:exception", t, u, job, {
                        "message": msg, "filename": f"https://cvat.example.com/assets/{fname}", "line": line,
                        "column": rng.randint(1, 80),
                        "stack": f"Error: {msg}\n    at {fname}:{line}:17\n    at Array.forEach (<anonymous>)",
                        "system": u.os, "client": f"{u.browser[0]} {u.browser[1]}", "version": "2.64.0"},
                        count=1))
            t += rng.randint(500, 5000)
            out.extend(self._save(u, job, t, drawn, emit, deleted))
            out.extend(self._job_update(u, job, t + rng.randint(2000, 30_000)))
            t += rng.randint(5000, 60_000)
            if len(out) > 2000:
                yield from out
                out.clear()
        flush()
        if rng.random() < 0.02:
            basename, action, method, status, msg = rng.choice(SERVER_ERRORS)
            out.append(self._server("send:exception", t + 1000, u, self._uuid(), {
                "basename": basename, "action": action, "message": msg, "status_code": status,
                "stack": f"Traceback (most recent call last):\n  File \"/home/django/cvat/apps/engine/views.py\","
                         f" line 1234, in {action}\n    return super().{action}(request)\n{msg}",
                "request": {"url": f"/api/{basename}/{rng.randint(1, 99)}/{action}", "query_params": {},
                            "content_type": "application/json", "method": method}}, count=1))
        yield from out

    def _ids(self, n: int) -> list[dict]:
        first, self.next_object_id = self.next_object_id, self.next_object_id + n
        return [{"id": i} for i in range(first, first + n)]

    def _save(self, u: User, job: Job, t: int, drawn: int, emit: Callable, deleted: int = 0) -> list[dict]:
        """save:job, then what CVAT's server logs for the request: one event per kind, and per
        shape type for shapes and tracks (cvat/apps/events/handlers.py, handle_annotations_change)."""
        emit(self._client("save:job", t, u, job, duration=self.rng.randint(200, 3000)))
        rid, rows = self._uuid(), []
        if drawn:
            shape = self.rng.choice(SHAPES)
            rows.append(self._server("create:shapes", t + self.rng.randint(100, 900), u, rid,
                                     {"shapes": self._ids(drawn)}, job=job, obj_name=shape, count=drawn))
        if self.rng.random() < 0.6:
            n = self.rng.randint(1, 9)
            rows.append(self._server("update:shapes", t + self.rng.randint(100, 900), u, rid,
                                     {"shapes": self._ids(n)}, job=job, obj_name=self.rng.choice(SHAPES), count=n))
        w = self.work_rng
        at = t + w.randint(100, 900)
        if deleted:
            rows.append(self._server("delete:shapes", at, u, rid, {"shapes": self._ids(deleted)}, job=job,
                                     obj_name=w.choice(SHAPES), count=deleted))
        if w.random() < 0.3:  # tracks drawn across frames: + their visible shapes
            tracks = [dict(t_, visible_shapes_count_diff=w.randint(5, 60), shapes=self._ids(2))
                      for t_ in self._ids(w.randint(1, 3))]
            rows.append(self._server("create:tracks", at, u, rid, {"tracks": tracks}, job=job,
                                     obj_name=w.choice(("rectangle", "polygon", "points")), count=len(tracks)))
        if w.random() < 0.2:  # tracks changed: CVAT's diff is stored minus sent visible shapes
            tracks = [dict(t_, visible_shapes_count_diff=w.randint(-10, 10), shapes=self._ids(1))
                      for t_ in self._ids(w.randint(1, 2))]
            rows.append(self._server("update:tracks", at, u, rid, {"tracks": tracks}, job=job,
                                     obj_name="rectangle", count=len(tracks)))
        if w.random() < 0.2:
            n = w.randint(1, 3)
            rows.append(self._server("create:tags", at, u, rid, {"tags": self._ids(n)}, job=job, count=n))
        return rows

    def _job_update(self, u: User, job: Job, t: int) -> list[dict]:
        """Jobs move on: update:job rows, one per changed field, sharing one request id."""
        rng = self.rng
        changes = []
        if job.state == "new":
            changes.append(("state", "new", "in progress"))
        elif job.state == "in progress" and rng.random() < 0.25:
            changes.append(("state", "in progress", "completed"))
            if job.stage == "annotation":
                changes.append(("stage", "annotation", "validation"))
        elif job.state == "completed" and job.stage == "validation" and rng.random() < 0.5:
            if rng.random() < 0.35:
                changes += [("state", "completed", "rejected"), ("stage", "validation", "annotation")]
            else:
                changes.append(("stage", "validation", "acceptance"))
        elif job.state == "rejected":
            changes.append(("state", "rejected", "in progress"))
        rid, rows = self._uuid(), []
        # A review decision is a reviewer's: another user of the annotator's organisation.
        decided = any(new in ("rejected", "acceptance") for _, _, new in changes)
        peers = [x for x in self.users if x is not u and x.org == u.org]
        by = self.work_rng.choice(peers) if decided and peers else u
        for field_name, old, new in changes:
            setattr(job, field_name, new)
            rows.append(self._server("update:job", t, by, rid, {"old_value": old}, job=job,
                                     obj_name=field_name, obj_val=new, obj_id=job.id))
        if rng.random() < 0.05:
            rows.append(self._server("export:dataset", t + 5000, u, self._uuid(),
                                     {"format": "COCO 1.0", "save_images": False}, task=job.task, obj_id=job.task.id))
        return rows

    def events(self, n: int) -> Iterator[dict]:
        """Exactly n events: setup bursts, then sessions user by user across the window."""
        produced = 0
        for ev in self.setup_events():
            if produced >= n:
                return
            yield ev
            produced += 1
        span = self.now_ms - self.start_ms
        # Sessions are spread so the window fills; clocks are per user.
        per_session = 160
        sessions = max(1, (n - produced) // per_session)
        per_user = max(1, sessions // len(self.users))
        gap = span // (per_user + 1)
        clock = {u.id: self.start_ms + self.rng.randint(0, max(1, gap)) for u in self.users}
        rounds = 0
        while produced < n:
            for u in self.users:
                t = clock[u.id]
                if t >= self.now_ms - 60_000:
                    t = self.start_ms + self.rng.randint(0, span - 60_000)  # wrap: fill again
                session_end = min(self.now_ms - 900_000, t + self.rng.randint(900_000, 7_200_000))
                last = t
                for ev in self.session(u, t, session_end):
                    if ev["_ts"] > self.now_ms:  # a save or update right at the end of the window
                        ev["_ts"] = self.now_ms
                    yield ev
                    last = max(last, ev["_ts"])
                    produced += 1
                    if produced >= n:
                        return
                clock[u.id] = last + max(60_000, int(self.rng.expovariate(1 / max(gap, 60_000))))
            rounds += 1
