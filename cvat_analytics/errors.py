"""Exception text as users and logs get it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ClickHouse's run to pages), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
