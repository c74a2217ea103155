"""Folders under the user's cache (`$XDG_CACHE_HOME/cvat-analytics`, else ~/.cache): what a
process keeps for the next one (a pass of the SQL check, compiled templates).

What is read back from there is trusted (a recorded pass skips a check; a compiled template
is code that runs), so a folder is used only if this user alone can write in it: theirs, not
a symbol link, no write bit for group or others. Otherwise, or where there is no home to
cache in (a container's user), callers go without: a cache only ever saves time."""
from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cvat-analytics"


def is_private(path: Path) -> bool:
    """Whether only this user can write in `path`."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return path.is_dir() and not path.is_symlink() and st.st_uid == os.getuid() and not st.st_mode & 0o022


def private_folder(name: str) -> Path | None:
    """`root()/name`, made (mode 0700) if missing; None if it cannot be made or is not private,
    or root() is not (whoever can write in root() can swap the folder for another)."""
    try:
        folder = root() / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to expand ~ in
        return None
    return folder if is_private(folder.parent) and is_private(folder) else None
