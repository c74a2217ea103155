"""One bench phase in this process: `python -m cvat_analytics.bench PHASE CONFIG RESULT`.

The orchestrator starts each phase so; CONFIG and RESULT are JSON files.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cvat_baselines import phase_cvat_export, phase_wt_python
from .generate import phase_bodies, phase_gen
from .ingest import phase_ceiling
from .load import phase_load
from .panels import phase_dashboards
from .working_time_engines import phase_wt_sql, phase_wt_udf

PHASES = {"gen": phase_gen, "bodies": phase_bodies, "load": phase_load, "wt_sql": phase_wt_sql,
          "wt_udf": phase_wt_udf, "wt_python": phase_wt_python, "dashboards": phase_dashboards,
          "cvat_export": phase_cvat_export, "ceiling": phase_ceiling}


def main(argv: list[str]) -> int:
    name, config, result = argv
    cfg = json.loads(Path(config).read_text())
    out = PHASES[name](cfg)
    Path(result).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
