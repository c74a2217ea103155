"""`cvat-analytics adopt`: put the override into a CVAT checkout so CVAT's own commands keep it.

CVAT is started and upgraded with a plain `docker compose up -d` in its checkout (no `-f`),
which loads the files `COMPOSE_FILE` in its `.env` names, else `docker-compose.yml` and the
user's `docker-compose.override.yml`. This module reads the checkout (its release, the compose
files it is started with), renders the whole deploy tree for that release into a folder
(default `<checkout>/cvat-analytics/deploy`, the spec used beside it), and writes into CVAT's
`.env`: `COMPOSE_FILE` (CVAT's files, then ours), `CVAT_ANALYTICS_DEPLOY`,
`CVAT_ANALYTICS_SOURCE` (the build context of the migration image) and any password the
override needs that the `.env` lacks (random). Every other line of the `.env` is kept byte for
byte; the file is replaced atomically. Run again after a CVAT upgrade: it re-renders for the
new release. `checkout_problems` is what `check --cvat` adds.
"""
from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from cvat_analytics_generator import contracts
from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import SpecError, load_schema, validate

OVERRIDE = "cvat-compose.override.yml"
DEFAULT_FOLDER = "cvat-analytics"  # inside the checkout, unless --out names another
# What Compose loads without -f or COMPOSE_FILE: the first of these that exists, then its
# override (compose-spec, "Compose file"; CVAT ships docker-compose.yml).
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
DEFAULT_OVERRIDES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yml",
                     "docker-compose.override.yaml")
# CVAT's image tags carry the release its compose file belongs to: `cvat/server:${CVAT_VERSION:-v2.43.0}`
# in every release 2.22-2.73 (tests/fixtures/cvat/).
IMAGE_TAG = re.compile(r"^\s*image:\s*['\"]?cvat/(?:server|ui):\$\{CVAT_VERSION:-v?([^}'\"]+)\}", re.M)
# cvat/__init__.py: VERSION = (2, 43, 0, 'final', 0)
VERSION_TUPLE = re.compile(r"^VERSION\s*=\s*\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*['\"](\w+)['\"]", re.M)
PASSWORDS = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD", "CLICKHOUSE_DASHBOARDS_PASSWORD",
             "CLICKHOUSE_CVAT_SERVER_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
MAX_ENV_BYTES = 1 << 20
SPEC_HEADER = ("# Written by `cvat-analytics adopt` for this CVAT checkout: edit your own analytics.yaml\n"
               "# and run adopt again.\n")


class CheckoutError(Exception):
    """A checkout adopt cannot read, worded with the file and what was expected."""


@dataclass
class Checkout:
    root: Path
    release: str
    env_text: str                  # CVAT's .env as it is ("" when there is none)
    env: dict[str, str]            # its values
    separator: str                 # COMPOSE_PATH_SEPARATOR, else the platform's
    compose_files: list[str]       # as CVAT is started today, ours left out


def known_releases() -> str:
    """The releases the spec accepts, as its schema words them: "2.22.x to 2.73.x (...)"."""
    text = load_schema()["properties"]["cvat_stack"]["properties"]["cvat_version"]["description"]
    return text.removeprefix("a known CVAT release: ").split(", like ")[0]


def _release_pattern() -> re.Pattern:
    return re.compile(load_schema()["properties"]["cvat_stack"]["properties"]["cvat_version"]["pattern"])


def read_checkout(root: Path) -> Checkout:
    """The release of a CVAT checkout and the compose files it is started with."""
    root = Path(root)
    if not root.is_dir():
        raise CheckoutError(f"{root}: expected a CVAT checkout (a directory holding docker-compose.yml)")
    env_path = root / ".env"
    env_text = _read_env(env_path)
    env = parse_env(env_text)
    separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    main = next((root / n for n in DEFAULT_FILES if (root / n).is_file()), None)
    if main is None:
        raise CheckoutError(f"{root / 'docker-compose.yml'}: missing; expected CVAT's compose file "
                            "(is this a CVAT checkout?)")
    release = _release(root, main, env)
    ours = _ours(root, env)
    users_override = [n for n in DEFAULT_OVERRIDES if (root / n).is_file()][:1]
    if env.get("COMPOSE_FILE"):
        listed = [f for f in env["COMPOSE_FILE"].split(separator) if f]
        files = [f for f in listed if _resolve(root, f) not in ours]
        # Compose loads docker-compose.override.yml only without COMPOSE_FILE: one the user
        # wrote after an earlier adopt (CVAT's install guide puts shared storage there) is
        # listed, or a plain `up` would ignore it.
        files += [n for n in users_override if _resolve(root, n) not in {_resolve(root, f) for f in files}]
    else:
        files = [main.name] + users_override
    for name in files:
        if not _resolve(root, name).is_file():
            raise CheckoutError(f"{env_path}: COMPOSE_FILE names {name}, which does not exist; expected "
                                f"the compose files CVAT is started with, separated by {separator!r}")
    return Checkout(root, release, env_text, env, separator, files)


def _read_env(path: Path) -> str:
    if not path.exists():
        return ""
    if not path.is_file() or path.stat().st_size > MAX_ENV_BYTES:
        raise CheckoutError(f"{path}: expected Compose's .env file, a regular file of at most 1 MiB")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckoutError(f"{path}: expected UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines of a Compose .env (quotes removed; later lines win, as in Compose)."""
    values = {}
    for line in _lines(text):
        line = line.removesuffix("\n").removesuffix("\r")
        match = ENV_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            values[match.group(1)] = _unquote(match.group(2))
    return values


def _lines(text: str) -> list[str]:
    """The .env's lines as Compose reads them, each with its line break: a line ends at \n
    (\r\n too) and nowhere else. str.splitlines also ends one at \r, \f, \x85, \u2028 and
    more, so adopt replaced a COMPOSE_FILE that Compose read as part of the value before it."""
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def _unquote(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def _release(root: Path, main: Path, env: dict[str, str]) -> str:
    """The release the checkout's compose file belongs to, from its image tags (and
    cvat/__init__.py where the checkout has it: both must agree)."""
    tags = set(IMAGE_TAG.findall(main.read_text(encoding="utf-8", errors="replace")))
    if len(tags) != 1:
        found = f"found {', '.join(sorted(tags))}" if tags else "found none"
        raise CheckoutError(f"{main}: expected CVAT's images tagged cvat/server:${{CVAT_VERSION:-vX.Y.Z}} "
                            f"with one release, {found}")
    release = tags.pop()
    init = root / "cvat" / "__init__.py"
    if init.is_file():
        match = VERSION_TUPLE.search(init.read_text(encoding="utf-8", errors="replace"))
        if match and (".".join(match.groups()[:3]) != release or match.group(4) != "final"):
            raise CheckoutError(f"{init}: VERSION is {'.'.join(match.groups()[:3])} ({match.group(4)}) but "
                                f"{main.name} is {release}'s; expected a released CVAT checkout")
    pinned = env.get("CVAT_VERSION", "").lstrip("v")
    if pinned and pinned != release:
        raise CheckoutError(f"{root / '.env'}: CVAT_VERSION runs CVAT {pinned}'s images with {release}'s "
                            f"{main.name}; expected the checkout of the release it runs")
    if not _release_pattern().fullmatch(release):
        raise CheckoutError(f"{main}: CVAT {release} is not a release cvat-analytics knows; known: "
                            f"{known_releases()}")
    return release


def _resolve(root: Path, name: str) -> Path:
    path = Path(name)
    return (path if path.is_absolute() else root / path).resolve()


def _ours(root: Path, env: dict[str, str]) -> set[Path]:
    """Our override wherever an earlier adopt put it (CVAT_ANALYTICS_DEPLOY), and by default."""
    places = {(root / DEFAULT_FOLDER / "deploy" / OVERRIDE).resolve()}
    if env.get("CVAT_ANALYTICS_DEPLOY"):
        places.add(_resolve(root, env["CVAT_ANALYTICS_DEPLOY"]) / OVERRIDE)
    return places


def source_root() -> Path | None:
    """The cvat-analytics checkout the migration image is built from (None for a wheel)."""
    import cvat_analytics_generator

    root = Path(cvat_analytics_generator.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "udf").is_dir() else None


def adopt(cvat: Path, spec: dict, out: Path | None = None, say=print) -> Checkout:
    """Render the override for the checkout's release and point CVAT's .env at it."""
    checkout = read_checkout(cvat)
    folder = Path(out) if out else checkout.root / DEFAULT_FOLDER
    deploy = (folder / "deploy").resolve()
    spec = {**spec, "cvat_stack": {**spec["cvat_stack"], "cvat_version": checkout.release}}
    try:
        validate(spec)
    except SpecError as exc:
        raise CheckoutError(str(exc)) from None
    files = render_all(spec)
    if OVERRIDE not in files:
        raise CheckoutError("the spec renders a ClickHouse cluster (clickhouse.cluster); CVAT's stack runs "
                            "one ClickHouse: expected clickhouse.cluster 1 x 1 for adopt")
    spec_copy = folder / "analytics.yaml"
    mine = spec_copy.is_file() and spec_copy.read_text(encoding="utf-8", errors="replace").startswith(SPEC_HEADER)
    if not mine and (spec_copy.exists() or deploy.exists()):
        # e.g. --out naming this checkout: its own analytics.yaml and deploy/ are not ours to replace
        taken = spec_copy if spec_copy.exists() else deploy
        raise CheckoutError(f"{taken}: exists and was not written by adopt; expected --out to name a "
                            "folder of adopt's own (default: CVAT_DIR/cvat-analytics)")
    updates = {"COMPOSE_FILE": checkout.separator.join(checkout.compose_files + [_relative(checkout.root, deploy / OVERRIDE)]),
               "CVAT_ANALYTICS_DEPLOY": str(deploy)}
    source = source_root()
    if source:
        updates["CVAT_ANALYTICS_SOURCE"] = str(source)
    else:
        say("no cvat-analytics checkout found to build the migration image from: set CVAT_ANALYTICS_SOURCE "
            "in CVAT's .env, or load the images (docs/cvat-stack.md, \"Images for an offline site\")")
    added = [name for name in PASSWORDS if name not in checkout.env]
    updates.update({name: secrets.token_urlsafe(24) for name in added})
    text, changed = edit_env(checkout.env_text, updates)  # refused here, before anything is written
    before = _rendered_release(deploy)
    write_tree(files, deploy)
    _write_atomically(spec_copy, _spec_text(spec))
    say(f"rendered the override for CVAT {checkout.release} into {deploy}"
        + (f" (was {before})" if before and before != checkout.release else ""))
    if changed:
        _write_atomically(checkout.root / ".env", text)
    for name in changed:
        say(f"{checkout.root / '.env'}: {name} " + ("added (a random value)" if name in added else f"= {updates[name]}"))
    if not changed:
        say(f"{checkout.root / '.env'}: unchanged")
    if os.environ.get("COMPOSE_FILE"):  # Compose takes the shell's over the .env's
        say("COMPOSE_FILE is set in this shell, and Compose prefers it to the .env's: unset it")
    say("start CVAT as its docs say (`docker compose up -d` in the checkout): it now includes the override")
    return checkout


def _rendered_release(deploy: Path) -> str | None:
    path = deploy / OVERRIDE
    return contracts.override_release(path.read_text(encoding="utf-8")) if path.is_file() else None


def _relative(root: Path, path: Path) -> str:
    """A path inside the checkout as Compose resolves COMPOSE_FILE (from the project directory),
    so the checkout can move; one outside it absolute."""
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _spec_text(spec: dict) -> str:
    """The spec rendered from, its cvat_stack.cvat_version the checkout's release: the one
    the migration service reads (${CVAT_ANALYTICS_DEPLOY}/../analytics.yaml)."""
    return SPEC_HEADER + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def edit_env(text: str, updates: dict[str, str]) -> tuple[str, list[str]]:
    """The .env with each key's line replaced in place (the last one, which Compose uses) or
    appended; every other byte kept. Returns the text and the keys whose value changed."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = _lines(text)
    current = parse_env(text)
    changed = [k for k, v in updates.items() if current.get(k) != v]
    last = {}
    for i, line in enumerate(lines):
        match = ENV_LINE.match(line.rstrip("\r\n"))
        if match and not line.lstrip().startswith("#"):
            last[match.group(1)] = i
    appended = []
    for key in changed:
        entry = f"{key}={_quote(key, updates[key])}"
        if key in last:
            ending = lines[last[key]][len(lines[last[key]].rstrip("\r\n")):]
            lines[last[key]] = entry + ending
        else:
            appended.append(entry + newline)
    if appended:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        lines += ["# cvat-analytics adopt: CVAT's analytics services are cvat-analytics' (docs/cvat-stack.md)" + newline]
        lines += appended
    return "".join(lines), changed


def _quote(key: str, value: str) -> str:
    """A value as Compose's .env reads it back unchanged: single quotes (no interpolation)
    when it holds a space, #, $, a quote or a backslash."""
    if "'" in value or "\n" in value:
        raise CheckoutError(f"{key}: cannot write {value!r} into .env (a quote or a line break)")
    return f"'{value}'" if re.search(r"[\s#$\"\\]", value) else value


def _write_atomically(path: Path, text: str) -> None:
    """Written beside the file, then renamed over it: never half-written; the mode kept (a
    symbolic link's target is the file replaced, so the link stays)."""
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkout_problems(cvat: Path) -> list[str]:
    """What `check --cvat` adds: the checkout's release against the one its override was
    rendered for, and COMPOSE_FILE listing ours (contracts.cvat_checkout_problems)."""
    try:
        checkout = read_checkout(cvat)
    except CheckoutError as exc:
        return [str(exc)]
    env_path = checkout.root / ".env"
    deploy = checkout.env.get("CVAT_ANALYTICS_DEPLOY")
    if not deploy:
        return [f"{env_path}: no CVAT_ANALYTICS_DEPLOY; run `cvat-analytics adopt {checkout.root}`"]
    override = _resolve(checkout.root, deploy) / OVERRIDE
    if not override.is_file():
        return [f"{override}: missing; run `cvat-analytics adopt {checkout.root}`"]
    listed = [str(_resolve(checkout.root, f)) for f in checkout.env.get("COMPOSE_FILE", "").split(checkout.separator) if f]
    wanted = [str(_resolve(checkout.root, f)) for f in checkout.compose_files] + [str(override.resolve())]
    return contracts.cvat_checkout_problems(override.read_text(encoding="utf-8"), str(override), checkout.release,
                                            str(env_path), listed, wanted, f"cvat-analytics adopt {checkout.root}")
