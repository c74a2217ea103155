"""The one way the project reads a file a user wrote: the spec, dashboard definitions (YAML)
and a dashboard to import (JSON).

A file must be a regular file (not a device, FIFO or folder, which can block or never end) of
at most MAX_BYTES. PyYAML's safe loader still takes aliases (`*name`), with which a small file
describes billions of values (a "billion laughs"), and lets a repeated key silently replace the
first. Here aliases are refused (no shipped spec or definition uses one; a definition shares
SQL through `fragments`) and so is a key given twice in one mapping, naming both lines. Every
refusal is a UserFileError naming the file and line.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .yaml_load import SafeLoader

# A spec, definition or Grafana dashboard is tens of kilobytes (the shipped spec is 16 KB);
# the bound keeps parsing under a few seconds.
MAX_BYTES = 1024 * 1024


class UserFileError(ValueError):
    """A file refused; the message names the file (and the line when there is one)."""


def read_yaml(path: Path | str, folder: Path | str | None = None) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of the YAML file at `path`. With `folder`, the file must lie inside
    it once symlinks are followed (a definition in custom_dashboards_dir)."""
    return parse_yaml(read_text(path, folder), path)


def read_text(path: Path | str, folder: Path | str | None = None) -> str:
    """The UTF-8 text of a regular file of at most MAX_BYTES (not a device, FIFO, socket or
    folder, which could block or never end), inside `folder` when one is given."""
    path = Path(path)
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links
        raise UserFileError(f"{path}: cannot read it: {exc}") from None
    if folder is not None and not real.is_relative_to(Path(folder).resolve()):
        raise UserFileError(f"{path}: refused: it leads outside {folder} (to {real})")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: `real` has no
        # link left, so none swapped in since is followed.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        raise UserFileError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserFileError(f"{path}: refused: not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise UserFileError(f"{path}: refused: larger than {MAX_BYTES} bytes, the limit for a spec, definition or dashboard file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserFileError(f"{path}: cannot read it: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def parse_yaml(text: str, source: Path | str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of YAML text read from `source` (named in errors)."""
    loader = _Loader(text)
    loader.source = str(source)
    try:
        for event in yaml.parse(text, Loader=SafeLoader):  # before anything is built from it
            if isinstance(event, yaml.AliasEvent):
                raise UserFileError(f"{source}:{event.start_mark.line + 1}: refused: an alias (*{event.anchor}); write "
                                    f"the value out (an alias can multiply a small file into billions of values)")
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except UserFileError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise UserFileError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserFileError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise UserFileError(f"{source}: refused: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise UserFileError(f"{source}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


# libyaml's parser when PyYAML has it (yaml_load; it also refuses nesting past 1000 levels);
# the mappings are built in Python either way.
class _Loader(SafeLoader):
    source = "<yaml>"

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: SafeConstructor merges it below
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise UserFileError(f"{self.source}:{line}: key {key!r} is given twice, at lines {first[key]} "
                                        f"and {line}: keep one")
                first[key] = line
            except TypeError:
                pass  # an unhashable key: the safe loader refuses it below
        return super().construct_mapping(node, deep)
