"""cvat-analytics runtime: the embedded service, ClickHouse access, import/export, the CLI."""
import os

# chdb loads numpy, whose OpenBLAS starts a spinning thread per core as it loads; nothing here
# multiplies matrices. One thread: ~0.11 CPU-s less for every process that opens the engine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
