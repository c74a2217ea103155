"""The demo's world: organizations, users (names, emails, browsers), projects, tasks and jobs.

Built from the caller's random generator, so a seed gives the same world every time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST = ["Alice", "Bob", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Julia",
         "Kofi", "Lena", "Mateo", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq"]
LAST = ["Smith", "Ivanova", "Wang", "Garcia", "Müller", "Khan", "Novak", "Sato", "Okafor", "Rossi"]
ORGS = ["acme-vision", "roadscan", "medlabel", "agri-ai", "retail-eyes"]
BROWSERS = [("Chrome", "124.0.0.0", 0.55), ("Firefox", "125.0", 0.2), ("Edge", "124.0.2478.80", 0.12),
            ("Safari", "17.4", 0.08), ("Opera", "109.0.0.0", 0.05)]
OSES = [("Windows 10", 0.45), ("Linux x86_64", 0.3), ("OS X 10.15.7", 0.2), ("Ubuntu", 0.05)]


@dataclass
class Job:
    id: int
    task: "Task"
    frames: int
    state: str = "new"
    stage: str = "annotation"


@dataclass
class Task:
    id: int
    name: str
    project: "Project"
    jobs: list = field(default_factory=list)


@dataclass
class Project:
    id: int
    name: str
    org: "Org | None"
    tasks: list = field(default_factory=list)


@dataclass
class Org:
    id: int
    slug: str


@dataclass
class User:
    id: int
    name: str
    email: str
    org: Org | None
    client_id: str
    browser: tuple
    os: str
    jobs: list = field(default_factory=list)


def _pick(rng: random.Random, weighted):
    r, acc = rng.random(), 0.0
    for item in weighted:
        acc += item[-1]
        if r < acc:
            return item
    return weighted[-1]


@dataclass
class World:
    orgs: list[Org]
    users: list[User]
    projects: list[Project]
    owner: User  # creates what no organization member creates


def build_world(rng: random.Random) -> World:
    """3-5 organizations, 10-16 users (every fifth in none), 1-3 projects per organization
    (and some without one), 2-4 tasks each of 2-5 jobs; each user works on 2-6 jobs of
    their organization."""
    orgs = [Org(i + 1, slug) for i, slug in enumerate(ORGS[: rng.randint(3, 5)])]
    users: list[User] = []
    ids = iter(range(1, 10**9))
    for uid in range(1, rng.randint(10, 16) + 1):
        first, last = FIRST[(uid - 1) % len(FIRST)], rng.choice(LAST)
        org = None if uid % 5 == 0 else orgs[uid % len(orgs)]
        users.append(User(
            uid, f"{first.lower()}.{last.lower().replace('ü', 'u')}",
            f"{first.lower()}.{last.lower().replace('ü', 'u')}@{(org.slug if org else 'example')}.com",
            org, str(rng.randrange(10**9, 10**10)), _pick(rng, BROWSERS), _pick(rng, OSES)[0]))
    projects: list[Project] = []
    task_id = job_id = 0
    for org in orgs + [None]:
        for _ in range(rng.randint(1, 3)):
            p = Project(next(ids), f"{rng.choice(['Cars', 'Pedestrians', 'Cells', 'Crops', 'Shelves', 'Signs'])}"
                        f" {rng.randint(1, 99)}", org)
            for _ in range(rng.randint(2, 4)):
                task_id += 1
                t = Task(task_id, f"batch_{task_id:03d}", p)
                for _ in range(rng.randint(2, 5)):
                    job_id += 1
                    t.jobs.append(Job(job_id, t, rng.randint(20, 400)))
                p.tasks.append(t)
            projects.append(p)
    for u in users:
        pool = [j for p in projects if p.org is u.org for t in p.tasks for j in t.jobs]
        if not pool:
            pool = [j for p in projects for t in p.tasks for j in t.jobs]
        u.jobs = rng.sample(pool, min(len(pool), rng.randint(2, 6)))
    return World(orgs, users, projects, users[0])
