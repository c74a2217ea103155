"""The SQL template convention (cvat_analytics_generator.sql): options, names, statements,
and the quoting helpers the renderer and the runtime share."""
import pytest

from cvat_analytics_generator.sql import (SqlTemplateError, escape_string, ident, parse, split_statements,
                                          string_literal)


def test_options_names_and_statements():
    text = ("-- reapply: on-change\n"
            "-- A prose comment: not an option, it ends them.\n"
            "\n"
            "-- name: clear\n"
            "-- why it runs first\n"
            "TRUNCATE TABLE t;\n"
            "\n"
            "SELECT 1;\n"
            "-- name: fill.rows\n"
            "INSERT INTO t\n"
            "-- a comment inside is dropped\n"
            "SELECT 2 -- a trailing one stays\n")
    parsed = parse(text, options={"reapply"})
    assert parsed.options == {"reapply": "on-change"}
    assert [(s.name, s.sql, s.line) for s in parsed.statements] == [
        ("clear", "TRUNCATE TABLE t", 6),
        (None, "SELECT 1", 8),
        ("fill.rows", "INSERT INTO t\nSELECT 2 -- a trailing one stays", 10),
    ]
    assert parsed.named("fill.rows").startswith("INSERT")
    with pytest.raises(KeyError):
        parsed.named("nope")


def test_a_semicolon_in_a_literal_or_a_comment_ends_nothing():
    text = ("SELECT 'a;b', 'it\\'s;', 'x'';y', `odd;name`, \"q;\" /* c; */ FROM t; -- after;\n"
            "SELECT 'line one;\n"
            "-- still inside the string\n"
            "line two' AS s;\n"
            "/* a block;\n"
            "comment */ SELECT 3;SELECT 4;")
    assert split_statements(text) == [
        "SELECT 'a;b', 'it\\'s;', 'x'';y', `odd;name`, \"q;\" /* c; */ FROM t",
        "SELECT 'line one;\n-- still inside the string\nline two' AS s",
        "SELECT 3",
        "SELECT 4",
    ]


def test_only_comments_and_empty_statements_give_nothing():
    assert split_statements("-- only a comment\n;\n  ;\n/* and a block */\n") == []
    assert split_statements("SELECT 1; -- done\n") == ["SELECT 1"]


def test_an_option_must_be_one_the_caller_knows():
    with pytest.raises(SqlTemplateError, match=r"m\.sql:2: unknown option 'reaply' \(known: reapply\)"):
        parse("-- reapply: on-change\n-- reaply: on-change\nSELECT 1;", "m.sql", options={"reapply"})
    assert parse("-- anything: goes\nSELECT 1;").options == {"anything": "goes"}


@pytest.mark.parametrize("text, message", [
    ("SELECT 1\n-- name: b\nSELECT 2;", r"f\.sql:2: `-- name:` inside a statement"),
    ("SELECT 1;\n-- name: last\n", r"f\.sql:2: `-- name: last` has no statement after it"),
    ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;", r"f\.sql:3: the name 'a' is used twice"),
    ("-- name: a\n-- name: b\nSELECT 1;", r"f\.sql:2: a second name"),
    ("-- name: two words\nSELECT 1;", r"f\.sql:1: a statement name is an id"),
    ("SELECT 'open;\n", r"f\.sql: a ' quote is not closed"),
])
def test_a_broken_template_is_named_with_its_line(text, message):
    with pytest.raises(SqlTemplateError, match=message):
        parse(text, "f.sql")


def test_quoting_helpers():
    assert ident("events") == "`events`"
    for bad in ("a`b", "a b", "1a", "", "x;DROP"):
        with pytest.raises(ValueError, match="identifier"):
            ident(bad)
    assert escape_string("a'b\\c") == "a\\'b\\\\c"
    assert string_literal("it's") == "'it\\'s'"
    hostile = string_literal(";x\\'; DROP")  # an escaped value stays one literal
    assert split_statements(f"SELECT {hostile};") == [f"SELECT {hostile}"]
