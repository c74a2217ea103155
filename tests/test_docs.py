"""Every spec key and every CLI command and option is documented (datasette's rule), in
docs/configuration.md, the reference the README's map points to; every page the map names exists."""

import pytest

from cvat_analytics.cli import build_parser
from cvat_analytics_generator.spec import load_schema
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()
COMMON_OPTIONS = {"--spec", "--dsn", "--help", "-h"}


def spec_keys(schema, prefix=""):
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub:
            yield from spec_keys(sub, path + ".")
        else:
            yield path


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("key", sorted(spec_keys(load_schema())))
def test_every_spec_key_is_documented(key):
    assert f"`{key}`" in CONFIGURATION, f"docs/configuration.md does not document spec key {key}"


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_and_option_is_documented(name):
    row = next((l for l in CONFIGURATION.splitlines() if l.startswith(f"| `{name}")), None)
    assert row, f"docs/configuration.md's CLI table has no row for `{name}`"
    for action in subcommands()[name]._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in COMMON_OPTIONS:
                assert option in row, f"README does not document {name} {option}"


def test_common_options_are_documented():
    for option in ("--spec FILE", "--dsn DSN"):
        assert option in CONFIGURATION


def test_the_readme_spec_error_example_is_what_the_cli_says(tmp_path):
    """The example under "The spec" is produced, not typed: same line number, same words."""
    from cvat_analytics_generator.spec import DEFAULT_SPEC, SpecError, load_spec

    example = CONFIGURATION.split("exit with code 2 and one line naming", 1)[1].split("```\n", 2)[1].strip()
    key, value = "retention_days", example.rsplit("got str ", 1)[1].strip("'")
    spec = tmp_path / "analytics.yaml"
    spec.write_text(DEFAULT_SPEC.read_text().replace(f"  {key}: 365", f"  {key}: {value}", 1))
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    assert str(error.value) == example.replace("analytics.yaml", str(spec), 1)


def test_every_page_the_readme_maps_exists_and_every_page_is_mapped():
    import re

    linked = set(re.findall(r"\]\((docs/[a-z-]+\.md)\)", README))
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert linked == pages
