#!/usr/bin/env python3
"""ClickHouse executable UDF: CVAT's working-time rule over one user's events.

Input, one JSON object per line (format JSONEachRow):
    {"ts": [ms, ...], "dur": [ms, ...], "scope": ["change:frame", ...]}
already in the tie-break order (timestamp, end, scope, job, task, project).
Output, one line per input line: {"result": [ms added at each event, ...]}.
The rule (docs/architecture.md, Working time): an event ends at ts + dur for a collapsed scope and at
ts otherwise; a gap to the running end counts only if strictly shorter than the
idle threshold; an end past the running end counts in full.

Arguments: --idle-threshold-ms N --collapsed-scopes a:b,c:d (from the spec).
Flushes after every row, so ClickHouse can keep it running (executable_pool).
Only the standard library: it runs under whatever python3 the server has.
"""
import argparse
import json
import sys


def working_time(ts, dur, scope, threshold, collapsed):
    """Milliseconds each event adds, in the order given."""
    out = []
    prev_end = ts[0] if ts else 0
    for t, d, s in zip(ts, dur, scope):
        end = t + d if s in collapsed else t
        added = 0
        if t > prev_end:
            if t - prev_end < threshold:
                added += t - prev_end
            prev_end = t
        if end > prev_end:
            added += end - prev_end
            prev_end = end
        out.append(added)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-threshold-ms", type=int, required=True)
    parser.add_argument("--collapsed-scopes", default="")
    args = parser.parse_args(argv)
    collapsed = frozenset(s for s in args.collapsed_scopes.split(",") if s)
    for line in sys.stdin:
        if not line.strip():
            continue
        row = json.loads(line)
        # 64-bit integers may arrive quoted, depending on output_format_json_quote_64bit_integers.
        ts = [int(x) for x in row["ts"]]
        dur = [int(x) for x in row["dur"]]
        result = working_time(ts, dur, row["scope"], args.idle_threshold_ms, collapsed)
        sys.stdout.write(json.dumps({"result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
