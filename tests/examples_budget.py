"""How many examples a property test draws: its deep count, scaled.

`make test` draws a tenth of each property test's deep count (at least 25), so the suite
stays within its minutes; `make test-deep` (TEST_EXAMPLES_SCALE=1) draws all of them, for
a change to the contract, the fast path or the fuzzed routes. Hypothesis's example database
is off in these tests, so every run draws new examples: coverage adds up across runs.
"""
from __future__ import annotations

import os

SCALE = float(os.environ.get("TEST_EXAMPLES_SCALE", "0.1"))


def examples(deep: int) -> int:
    """The number of examples to draw for a test whose deep count is `deep`."""
    return max(min(deep, 25), round(deep * SCALE))
