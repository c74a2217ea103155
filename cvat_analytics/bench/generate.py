"""The bench's data: demo events as chunk files for the bulk load, and CVAT's wire bodies for ingest."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from .. import demo

CHUNK_ROWS = 500_000


def phase_gen(cfg: dict) -> dict:
    """Demo events -> JSONEachRow chunk files (raw payload JSON, `_ts` in ms) for the loader
    (templates/load_chunk.sql.j2), written while the loader reads the earlier ones."""
    out = Path(cfg["workdir"]) / "chunks"
    out.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    gen = demo.Demo(seed=cfg["seed"], days=cfg["days"], now_ms=cfg["now_ms"])
    started = time.monotonic()
    buf, chunk, n = [], 0, 0
    for ev in gen.events(cfg["n"]):
        buf.append(dumps(ev))
        n += 1
        if len(buf) >= CHUNK_ROWS:
            _write_chunk(out, chunk, buf)
            chunk, buf = chunk + 1, []
    if buf:
        _write_chunk(out, chunk, buf)
        chunk += 1
    (out / "DONE").write_text(str(chunk))
    return {"events": n, "chunks": chunk, "seconds": time.monotonic() - started,
            "users": len(gen.users)}


def chunk_path(chunks: Path, index: int) -> Path:
    return chunks / f"chunk_{index:05d}.jsonl"


def _write_chunk(out: Path, index: int, lines: list[str]) -> None:
    tmp = out / f"chunk_{index:05d}.part"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(chunk_path(out, index))  # whole files only: the loader never reads a half-written one


def phase_bodies(cfg: dict) -> dict:
    """The ingest sample: CVAT's wire bodies (100 / 1000 events) and the stored rows."""
    work = Path(cfg["workdir"])
    m = max(cfg["ingest"].values())
    gen = demo.Demo(seed=cfg["seed"], days=cfg["days"], now_ms=cfg["now_ms"])
    wire, rows = [], []
    for i, ev in enumerate(gen.events(m)):
        wire.append(demo.to_wire(ev, micros=(i * 7919) % 1000))
        rows.append(demo.to_row(ev))
    for size, count in cfg["ingest"].items():
        with open(work / f"bodies_{size}.bin", "wb") as fh:
            for start in range(0, count, int(size)):
                body = json.dumps(wire[start:start + int(size)], ensure_ascii=False).encode()
                fh.write(struct.pack("<I", len(body)) + body)
    with open(work / "rows.jsonl", "wb") as fh:
        fh.write(b"".join(rows))
    return {"events": len(rows)}


def read_bodies(path: Path) -> list[bytes]:
    """The bodies phase_bodies wrote: each one prefixed by its length (uint32, little-endian)."""
    data, bodies, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        bodies.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return bodies
