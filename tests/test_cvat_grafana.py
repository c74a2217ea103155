"""Grafana behind CVAT's Traefik, and CVAT's way of changing a dashboard, with our override.

No Grafana runs here: what Grafana 12.4 does was read from its source and is encoded in
generator/contracts.py (the CSRF filter of pkg/middleware/csrf/csrf.go reimplemented as
`grafana_csrf_refusal`, which sign-ins exist from authnimpl/registration.go, what two
dashboard providers of one uid do from provisioning/dashboards/validator.go). These tests
check that reimplementation against Grafana's own test cases, then apply it to the override
rendered for every vendored CVAT release and merged with that release's compose files by
the Compose binary: the request a browser sends through CVAT's Traefik (Host from CVAT's
route, Origin from CVAT_HOST) is let through, in each `cvat_stack.grafana_auth_mode`.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from cvat_analytics_generator.contracts import (CVAT_DASHBOARDS, CVAT_STOCK_DASHBOARDS, GRAFANA_LOGIN_COOKIE,
                                                cvat_dashboard_changes, cvat_grafana_problems, git_blob_id,
                                                grafana_csrf_refusal, grafana_signs_in)
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.yaml_load import safe_load

from .conftest import REPO, write_spec
from .test_cvat_stack import FIXTURES, RELEASES, Stack, stacks  # noqa: F401 - the fixture

MODES = ["anonymous_admin", "anonymous_viewer", "login"]
SESSION = (GRAFANA_LOGIN_COOKIE,)
CLI = REPO / ".venv" / "bin" / "cvat-analytics"


# --- the reimplemented CSRF filter agrees with Grafana's own tests ----------------------------
# pkg/middleware/csrf/csrf_test.go @ 43450afe, TestMiddlewareCSRF and TestCSRF_Check:
# (settings, method, Host, Origin, extra headers, session cookie?) -> refused?
GRAFANA_CASES = [
    ({}, "GET", "localhost", "http://notLocalhost", {}, True, True),     # mismatched origin and host
    ({}, "TRACE", "localhost", "http://notLocalhost", {}, True, False),  # a safe method
    ({}, "GET", "localhost", "http://notLocalhost", {}, False, False),   # no login cookie
    ({}, "GET", "localhost:80", "http://localhost:3000", {}, True, False),  # the port does not count
    ({}, "GET", "[::1]:3000", "http://[::1]:3000", {}, True, False),
    ({}, "POST", "grafana.org", "", {}, True, False),                    # no Origin
    ({}, "POST", "grafana.org", "null", {}, True, True),
    ({}, "POST", "grafana.org", "https://grafana.org", {}, True, False),
    ({}, "POST", "grafana.localhost", "https://grafana.org", {"X-Forwarded-Host": "grafana.org"}, True, True),
    ({"GF_SECURITY_CSRF_ADDITIONAL_HEADERS": "X-Forwarded-Host"}, "POST", "grafana.localhost",
     "https://grafana.org", {"X-Forwarded-Host": "grafana.org"}, True, False),
    ({}, "POST", "grafana.org", "https://grafana.com", {}, True, True),
    ({"GF_SECURITY_CSRF_TRUSTED_ORIGINS": "grafana.com"}, "POST", "grafana.org", "https://grafana.com", {}, True, False),
]


@pytest.mark.parametrize("env, method, host, origin, headers, cookie, refused", GRAFANA_CASES)
def test_the_csrf_reimplementation_decides_grafanas_own_test_cases_as_grafana_does(
        env, method, host, origin, headers, cookie, refused):
    got = grafana_csrf_refusal(env, host=host, origin=origin, method=method, headers=headers,
                               cookies=SESSION if cookie else ())
    assert (got is not None) == refused, got


def test_a_trusted_origin_is_a_bare_host_name_and_the_root_url_is_never_read():
    """csrf.go:127-132 compares the Origin's Hostname() with each trusted origin as written:
    a scheme or port there never matches; GF_SERVER_ROOT_URL is not among its settings."""
    request = dict(host="grafana:3000", origin="http://cvat.example:8080", cookies=SESSION)
    assert grafana_csrf_refusal({}, **request)
    assert grafana_csrf_refusal({"GF_SERVER_ROOT_URL": "http://cvat.example/analytics"}, **request)
    assert grafana_csrf_refusal({"GF_SECURITY_CSRF_TRUSTED_ORIGINS": "http://cvat.example:8080"}, **request)
    assert grafana_csrf_refusal({"GF_SECURITY_CSRF_TRUSTED_ORIGINS": "cvat.example"}, **request) is None
    # Compared as written: a CVAT_HOST in capitals never matches the browser's lower-case Origin.
    assert grafana_csrf_refusal({"GF_SECURITY_CSRF_TRUSTED_ORIGINS": "CVAT.example"}, **request)


# --- the rendered override, merged with CVAT's compose files -----------------------------------

def grafana_request(stack: Stack) -> tuple[dict, str, str]:
    """The merged Grafana environment, the Host CVAT's Traefik sends it and the Origin the
    browser sends, all read from the merged configuration (CVAT_HOST unset: CVAT's default)."""
    traefik = stack.services["traefik"]
    rules = safe_load(stack.mounted(traefik, "/etc/traefik/rules/grafana_conf.yml").read_text())["http"]
    service = rules["services"]["grafana"]["loadBalancer"]
    assert service["passHostHeader"] is False  # so Grafana sees its upstream's host, not CVAT's
    env_of_traefik = lambda m: str(traefik["environment"][m.group(1)])  # noqa: E731
    upstream = re.sub(r'\{\{ env "(\w+)" \}\}', env_of_traefik, service["servers"][0]["url"]).removeprefix("http://")
    routed = re.search(r"Host\(`(.+?)`\)", re.sub(r'\{\{ env "(\w+)" \}\}', env_of_traefik, rules["routers"]["grafana"]["rule"]))
    port = next(p["published"] for p in traefik["ports"] if str(p["target"]) == "8080")
    grafana = stack.by_alias(upstream.split(":")[0])
    return grafana["environment"], upstream, f"http://{routed.group(1)}:{port}"


@pytest.fixture(scope="module")
def mode_stacks(tmp_path_factory):
    made = {}

    def get(release: str, mode: str) -> Stack:
        if (release, mode) not in made:
            made[release, mode] = Stack(tmp_path_factory.mktemp(f"{release}-{mode}"), release,
                                        **{"cvat_stack.grafana_auth_mode": mode})
        return made[release, mode]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_by_default_grafana_is_cvats_anonymous_admin_with_no_sign_in_so_no_csrf_refusal(mode_stacks, release):
    """CVAT's own settings (its docker-compose.yml): basic auth and the login form off, the
    anonymous visitor an Admin. No sign-in exists, so no session cookie, so Grafana's CSRF
    check (csrf.go:76-81) never refuses a query or a save."""
    env, host, origin = grafana_request(mode_stacks(release, "anonymous_admin"))
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Admin")
    assert (env["GF_AUTH_DISABLE_LOGIN_FORM"], env["GF_AUTH_BASIC_ENABLED"]) == ("true", "false")
    assert not grafana_signs_in(env)
    assert grafana_csrf_refusal(env, host=host, origin=origin) is None


@pytest.mark.slow
@pytest.mark.parametrize("release", [RELEASES[0], RELEASES[-1]])
@pytest.mark.parametrize("mode", MODES)
def test_a_signed_in_post_through_cvats_traefik_passes_and_a_cross_site_one_does_not(mode_stacks, release, mode):
    """Whatever the mode: a browser's POST with Grafana's session cookie, Host from CVAT's
    route (grafana:3000) and Origin CVAT's address, passes Grafana's CSRF check; the same
    from another site is refused. In the anonymous modes no one can sign in at all."""
    env, host, origin = grafana_request(mode_stacks(release, mode))
    assert grafana_signs_in(env) == (mode == "login")
    assert host.startswith("grafana:") and "cvat" not in host
    assert grafana_csrf_refusal(env, host=host, origin=origin, cookies=SESSION) is None
    assert grafana_csrf_refusal(env, host=host, origin="https://attacker.invalid", cookies=SESSION)
    role = {"anonymous_admin": "Admin", "anonymous_viewer": "Viewer"}.get(mode)
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == role
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == ("false" if mode == "login" else "true")


def test_check_names_a_render_whose_signed_in_posts_grafana_refuses(tmp_path):
    """`cvat-analytics check` holds the override to these facts: it names the line to fix."""
    _, path = write_spec(tmp_path, **{"cvat_stack.grafana_auth_mode": "login"})
    files = render_all(load_spec(path))
    assert cvat_grafana_problems(files) == []
    override = files["cvat-compose.override.yml"]
    line = "      GF_SECURITY_CSRF_TRUSTED_ORIGINS: ${CVAT_HOST:-localhost}\n"
    assert line in override
    for broken in ("", "      GF_SECURITY_CSRF_TRUSTED_ORIGINS: http://${CVAT_HOST:-localhost}:8080\n"):
        problems = cvat_grafana_problems({**files, "cvat-compose.override.yml": override.replace(line, broken)})
        assert any("refused by Grafana's CSRF check" in p and "CVAT_HOST=cvat.example" in p for p in problems), problems


def test_check_names_anonymous_access_with_basic_auth_on(tmp_path):
    files = render_all(load_spec(write_spec(tmp_path)[1]))
    assert cvat_grafana_problems(files) == []
    override = files["cvat-compose.override.yml"].replace('GF_AUTH_BASIC_ENABLED: "false"', 'GF_AUTH_BASIC_ENABLED: "true"')
    [problem] = set(p.split(": ", 2)[2] for p in cvat_grafana_problems({**files, "cvat-compose.override.yml": override}))
    assert "GF_AUTH_BASIC_ENABLED" in problem and "registration.go:74-76" in problem


def test_the_spec_key_is_documented_with_each_mode():
    schema = safe_load((REPO / "generator" / "spec_schema.yaml").read_text())
    key = schema["properties"]["cvat_stack"]["properties"]["grafana_auth_mode"]
    assert key["enum"] == MODES and all(m in key["description"] for m in MODES)
    assert safe_load((REPO / "analytics.yaml").read_text())["cvat_stack"]["grafana_auth_mode"] == "anonymous_admin"
    row = next(line for line in (REPO / "docs" / "configuration.md").read_text().splitlines()
               if line.startswith("| `cvat_stack.grafana_auth_mode`"))
    assert all(f"`{m}`" in row for m in MODES)
    docs = (REPO / "docs" / "cvat-stack.md").read_text()
    assert "## Grafana behind CVAT's Traefik" in docs and "GF_SECURITY_ADMIN_PASSWORD" in docs


# --- CVAT's customisation path: edit, save the JSON into CVAT's folder, restart -------------------

@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_no_dashboards_provider_reads_cvats_folder_whose_stock_files_carry_our_uids(stacks, release):
    """Each provider's path is one the override mounts (from our deploy/), never CVAT's
    dashboards folder: its stock files have our uids, and two providers of one uid lose
    their database writes (validator.go:112-130). CVAT's own mount of it is dropped."""
    stack = stacks(release)
    grafana = stack.by_alias("grafana")
    provisioning = stack.mounted(grafana, "/etc/grafana/provisioning")
    assert provisioning == stack.deploy / "grafana" / "provisioning"
    for provider_file in (provisioning / "dashboards").glob("*.yaml"):
        for provider in safe_load(provider_file.read_text())["providers"]:
            source = stack.mounted(grafana, provider["options"]["path"])
            assert source == stack.deploy / "grafana" / "dashboards"
            uids = {json.loads(p.read_text())["uid"] for p in source.glob("*.json")}
            assert {"EIGSTDAVz", "w0if6WAVz", "WvDvWK04k"} <= uids
    assert not any(CVAT_DASHBOARDS in v["source"] for v in grafana["volumes"])


def test_check_names_a_second_provider_on_cvats_dashboards_folder(tmp_path):
    files = render_all(load_spec(write_spec(tmp_path)[1]))
    override = files["cvat-compose.override.yml"].replace(
        "/grafana/dashboards:/var/lib/grafana/dashboards:ro\n",
        "/grafana/dashboards:/var/lib/grafana/dashboards:ro\n"
        "      - ./components/analytics/grafana/dashboards:/var/lib/grafana/cvat-dashboards:ro\n")
    provider = yaml.safe_dump({"apiVersion": 1, "providers": [
        {"name": "cvat-logs", "type": "file", "options": {"path": "/var/lib/grafana/cvat-dashboards"}}]})
    problems = cvat_grafana_problems({**files, "cvat-compose.override.yml": override,
                                      "grafana/provisioning/dashboards/cvat-logs.yaml": provider})
    assert any("provider 'cvat-logs'" in p and "validator.go:112-130" in p for p in problems), problems


def test_the_stock_table_holds_the_vendored_release_and_finds_only_changed_files(tmp_path):
    shipped = FIXTURES / "v2.73.0"
    for path in (shipped / CVAT_DASHBOARDS).glob("*.json"):
        assert CVAT_STOCK_DASHBOARDS[path.name][git_blob_id(path.read_bytes())].endswith("2.73.0")
    assert cvat_dashboard_changes(shipped) == []
    cvat = tmp_path / "cvat"
    shutil.copytree(shipped, cvat)
    folder = cvat / CVAT_DASHBOARDS
    model = json.loads((folder / "monitoring.json").read_text())
    model["panels"][0]["title"] = "Edited in Grafana"
    (folder / "monitoring.json").write_text(json.dumps(model, indent=2))
    (folder / "team").mkdir()
    shutil.copy(folder / "all_events.json", folder / "team" / "copy.json")  # foldersFromFilesStructure, as CVAT's provider
    crlf = (folder / "management.json").read_bytes().replace(b"\n", b"\r\n")  # a Windows checkout
    (folder / "management.json").write_bytes(crlf)
    assert cvat_dashboard_changes(cvat) == [folder / "monitoring.json"]  # a stock file anywhere is stock
    with pytest.raises(FileNotFoundError, match="CVAT's checkout"):
        cvat_dashboard_changes(tmp_path)


def test_a_dashboard_saved_into_cvats_folder_is_imported_and_provisioned_under_its_uid(tmp_path):
    cvat = tmp_path / "cvat"
    shutil.copytree(FIXTURES / "v2.73.0", cvat)
    saved = cvat / CVAT_DASHBOARDS / "monitoring.json"
    model = json.loads(saved.read_text())
    model["panels"][1]["title"] = "Edited in Grafana"
    saved.write_text(json.dumps(model, indent=2))
    (tmp_path / "mine").mkdir()
    _, spec_path = write_spec(tmp_path, custom_dashboards_dir="mine")
    run = subprocess.run([str(CLI), "dashboards", "import", "--spec", str(spec_path), "--from-cvat", str(cvat)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "replaces the built-in monitoring" in run.stdout and "all_events" not in run.stdout
    rendered = json.loads(render_all(load_spec(spec_path))["grafana/dashboards/monitoring.json"])
    assert rendered["uid"] == "WvDvWK04k"
    assert "Edited in Grafana" in [p["title"] for p in rendered["panels"]]
