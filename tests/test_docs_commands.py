"""Every `cvat-analytics …` and `make …` command a page shows still works as written.

The commands are taken from README.md, docs/*.md and the CLI's own `--help` examples: every line
of a fenced code block, and every inline code span that starts with the command (a span may name a
command without its required arguments: `cvat-analytics adopt`). A `cvat-analytics`
command is parsed by the CLI's real argparse parser (`build_parser()`, abbreviations off, so a
renamed option is not rescued by a prefix); a `make` command must name a target of the Makefile.
Placeholders (`CVAT_DIR`, `N`, `[--option N]`) get sample values first. The synopses of
docs/configuration.md's CLI table are checked the other way round from tests/test_docs.py: every
option a row names exists, with the parser's own choices. And docs/architecture.md's map holds:
every file it names exists, every name its "Follow an event" walk gives is in the code. Nothing is run: no
subprocess, no engine (the test phases add up to about a second on a busy 2-core machine).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

import pytest

from cvat_analytics.cli import EXAMPLES, build_parser
from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Sample values for the placeholders pages use in place of a real argument.
PLACEHOLDERS = {"N": "1000", "S": "1", "D": "7", "T": "2026-12-06T00:00:00", "DAY": "2026-12-06",
                "FILE": "sample.json", "DIR": "sample-dir", "PATH": "/path/to/cvat", "CVAT_DIR": "/path/to/cvat"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>"}


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of one shell line: comments dropped, split at `&&`, `|`, `;`, with
    leading `VAR=value` assignments removed; a line that is not shell (a diagram) gives none."""
    text = re.sub(r"<[\w.-]+>", "sample", text)  # <custom_dashboards_dir>: a placeholder, not a redirection
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose or a diagram, not a command
        return []
    commands, current, redirected = [], [], False
    for token in tokens + [";"]:
        if redirected:  # the file of `> events.csv` is the shell's, not an argument
            redirected = False
        elif token in REDIRECTIONS:
            redirected = True
        elif token in SEPARATORS:
            while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    return commands


def shown_commands(name: str, text: str):
    """(where, words, inline) for every cvat-analytics or make command shown in a page."""
    lines = text.splitlines()
    fenced, number = False, 0
    while number < len(lines):
        line, first = lines[number], number + 1
        number += 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            while line.endswith("\\") and number < len(lines):  # a continued command
                line, number = line[:-1] + " " + lines[number], number + 1
            candidates = [line.strip().removeprefix("$ ")]
        else:
            candidates = re.findall(r"`([^`]+)`", line)
        for candidate in candidates:
            for words in shell_commands(candidate):
                if (words[0].split("/")[-1] in ("cvat-analytics", "make")) and len(words) > 1:
                    yield f"{name}:{first}", words, not fenced


def all_commands():
    found = []
    for page in PAGES:
        found += shown_commands(str(page.relative_to(REPO)), page.read_text())
    # `--help`'s examples: a command, two spaces or more, what it does.
    examples = [re.split(r"\s{2,}", line.strip())[0] for line in EXAMPLES.splitlines()
                if line.strip().startswith("cvat-analytics ")]
    found += shown_commands("cvat_analytics/cli.py EXAMPLES", "```\n" + "\n".join(examples) + "\n```\n")
    return found


def with_samples(words: list[str]) -> list[str]:
    """`[--events N]` → `--events 1000`: optional brackets dropped, placeholders filled in."""
    out = []
    for word in words:
        word = word.removeprefix("[").removesuffix("]")
        out.append(PLACEHOLDERS.get(word, word))
    return out


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """No abbreviations anywhere: `--even` must not pass for `--events`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)
    return parser


PARSER = strict(build_parser())


def cli_error(argv: list[str], inline: bool = False) -> str | None:
    """argparse's own message when the argument list does not parse, else None. An inline span
    may leave out required arguments: they are filled with samples and the rest still checked."""
    error = _parse_error(argv)
    missing = re.search(r"the following arguments are required: (.+)$", error or "")
    if inline and missing:
        names = missing[1].split(", ")
        if {"COMMAND", "ACTION"} & set(names):  # a command group named in prose
            return None
        return _parse_error(argv + [PLACEHOLDERS.get(n, "sample") for n in names])
    return error


def _parse_error(argv: list[str]) -> str | None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            PARSER.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code:  # --help and --version exit 0
            return err.getvalue().strip().splitlines()[-1]
    return None


def make_targets() -> set[str]:
    """Target names of the Makefile, with its `$(VAR)` in names expanded."""
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+)\s*[:?]?=\s*(\S*)", text, re.M))
    targets = set()
    for line in text.splitlines():
        match = re.match(r"^([^\s#=:][^=:]*?)\s*:(?!=)", line)
        if match:
            name = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), match[1])
            targets.update(name.split())
    return targets


COMMANDS = all_commands()
CLI = [command for command in COMMANDS if command[1][0].endswith("cvat-analytics")]
MAKE = [command[:2] for command in COMMANDS if not command[1][0].endswith("cvat-analytics")]


@pytest.mark.parametrize("where,words,inline", CLI, ids=[f"{w} {' '.join(c[1:])}" for w, c, _ in CLI])
def test_every_cli_command_a_page_shows_parses(where, words, inline):
    argv = with_samples(words[1:])
    error = cli_error(argv, inline)
    shown = " ".join(words)
    assert error is None, f"{where}: `{shown}` does not parse: {error}"


@pytest.mark.parametrize("where,words", MAKE, ids=[f"{w} {' '.join(c[1:])}" for w, c in MAKE])
def test_every_make_command_a_page_shows_is_a_target(where, words):
    targets = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
    missing = [t for t in targets if t not in make_targets()]
    shown = " ".join(words)
    assert not missing, f"{where}: `{shown}`: the Makefile has no target {', '.join(missing)}"


def test_the_pages_show_commands_of_each_kind():
    """The extraction itself works: the quick start's commands are found, a diagram's are not."""
    found = {(where.split(":")[0], " ".join(words)) for where, words, _ in COMMANDS}
    assert ("README.md", "make up") in found
    assert ("README.md", ".venv/bin/cvat-analytics working-time --by user") in found
    diagram = "```\n      └──POST JSON──► cvat-analytics serve ──chdb──┘\n```\n"
    assert not list(shown_commands("docs/x.md", diagram))
    assert len(CLI) > 20 and len(MAKE) > 10
    assert sum(where.startswith("cvat_analytics/cli.py EXAMPLES") for where, _, _ in CLI) == 6


@pytest.mark.parametrize("argv,word", [
    (["export", "--project", "3"], "--project"),           # an abbreviation of --project-id
    (["check", "--cvat-dir", "/x"], "--cvat-dir"),         # an option that does not exist
    (["working-time", "--by", "user", "--engine", "gpu"], "gpu"),  # a value outside the choices
    (["serve-all"], "serve-all"),                          # a subcommand that does not exist
])
def test_a_wrong_command_is_refused_naming_the_word(argv, word):
    error = cli_error(argv)
    assert error and word in error


def test_redirections_and_angle_placeholders_are_not_arguments():
    assert shell_commands("cvat-analytics export --project-id 3 > events.csv && make check") == [
        ["cvat-analytics", "export", "--project-id", "3"], ["make", "check"]]
    assert shell_commands("cvat-analytics render --out <dir>") == [["cvat-analytics", "render", "--out", "sample"]]


def test_a_wrong_command_in_a_page_is_found_with_its_line():
    page = "text\n```sh\ncvat-analytics render --out deploy\ncvat-analytics check --outdir deploy\n```\n"
    [(where, words)] = [(w, c) for w, c, _ in shown_commands("docs/x.md", page) if cli_error(c[1:])]
    assert where == "docs/x.md:4" and "--outdir" in cli_error(words[1:])


def test_an_inline_span_may_leave_out_required_arguments_but_not_misname_an_option():
    assert cli_error(["adopt"], inline=True) is None
    assert cli_error(["adopt"]) is not None  # in a code block it is run as written
    assert "--bogus" in cli_error(["adopt", "--bogus"], inline=True)


def cli_table_rows():
    """(line number, synopsis) of each row of docs/configuration.md's CLI table."""
    text = (REPO / "docs" / "configuration.md").read_text()
    commands = set(subparsers(PARSER))
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"\| `([^`]+)` \|", line)
        if match and match[1].split()[0] in commands:
            yield number, match[1].replace("\\|", "|")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("number,synopsis", list(cli_table_rows()), ids=lambda v: str(v)[:40])
def test_every_option_the_cli_table_names_exists_with_its_choices(number, synopsis):
    """The CLI table shows synopses (`[--target compose|k8s]`, `-o/--output`), not runnable lines:
    every option it names must be one of that subcommand's, and a choice list the parser's own."""
    words = synopsis.replace("[", " ").replace("]", " ").split()
    parser = subparsers(PARSER)[words[0]]
    nested = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if nested and words[1:2] and words[1] in nested.choices:  # `dashboards import`, `bench soak`
        parser = nested.choices[words[1]]
    options = {o: a for a in parser._actions for o in a.option_strings}
    for at, word in enumerate(words):
        for option in word.split("/") if word.startswith("-") else []:
            assert option in options, f"docs/configuration.md:{number}: {words[0]} has no option {option}"
            action, value = options[option], words[at + 1] if at + 1 < len(words) else ""
            if action.choices and "|" in value:
                shown = set(value.split("|"))
                assert shown == set(action.choices), (
                    f"docs/configuration.md:{number}: {option} shows {sorted(shown)}, the CLI takes {sorted(action.choices)}")


# --- docs/architecture.md's map: the files and names it sends a reader to exist ---------------

ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()
# Where a short name in the page is read from ("`ingest.py`" in the service's row, and so on).
FOLDERS = ["", "cvat_analytics/", "cvat_analytics/service/", "cvat_analytics/export/", "generator/",
           "generator/templates/", "generator/templates/clickhouse/", "generator/templates/vector/",
           "generator/templates/clickhouse/users.d/", "docs/"]


def named_files(text: str) -> list[str]:
    spans = re.findall(r"`([^`\s]+)`", text)
    return [s for s in spans if re.search(r"(/|\.(py|j2|jinja|yaml|yml|md|sql))$", s)
            and not s.startswith(("http", "chdb:", "/")) and "<db>" not in s and "…" not in s]


def test_every_file_the_architecture_page_names_exists():
    missing = [name for name in named_files(ARCHITECTURE)
               if not any(any(REPO.glob(folder + re.sub(r"<[^>]+>", "*", name).rstrip("/"))) for folder in FOLDERS)]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_name_the_follow_an_event_walk_gives_is_in_the_code():
    """A function, class, view or Vector component renamed in the code fails here, not in a reader's hands."""
    walk = ARCHITECTURE.split("## Follow an event", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(path.read_text() for folder in ("cvat_analytics", "generator")
                     for path in (REPO / folder).rglob("*") if path.suffix in (".py", ".j2", ".jinja"))
    names = {span.split(".")[-1] for span in re.findall(r"`([A-Za-z_][\w.]*)`", walk)
             if not re.search(r"\.(py|j2|jinja|yaml|md)$", span)}
    missing = sorted(name for name in names if not re.search(rf"\b{re.escape(name)}\b", code))
    assert len(names) > 20 and not missing, f"docs/architecture.md, Follow an event, names {missing}: not in the code"
