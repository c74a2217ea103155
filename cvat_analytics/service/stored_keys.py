"""The filter of stored request keys: which of a group's keys may already be in <db>.ingest_requests.

Group commit (group_commit.py) asks the table only when the filter says "maybe"; on chdb,
where serve is the only writer of its store, a group of new keys (the usual case) is
spared the look-up.
"""
from __future__ import annotations


class StoredKeys:
    """A Bloom filter of the keys in <db>.ingest_requests: "not there" is certain, "maybe"
    is wrong about 1% of the time (then the table is asked). It is filled from the table
    at start and by each group after its INSERT, which is right only while this process
    is the table's one writer (a chdb store). About 1.2 MB per million keys; past its
    capacity it is rebuilt from the table at twice the size. Keys deleted from the table
    (expired) stay "maybe": that costs a look-up, never a lost request."""

    HASHES = 7  # with BITS_PER_KEY = 10: ~1% false "maybe"
    BITS_PER_KEY = 10
    MIN_CAPACITY = 1_000_000

    def __init__(self, client, sql):
        self.client, self.sql = client, sql
        self._load(0)

    def _load(self, capacity: int) -> None:
        """(Re)build from the table, for at least `capacity` keys and twice those stored."""
        self.capacity = max(capacity, 2 * int(self.client.command(self.sql.named("count"))), self.MIN_CAPACITY)
        self.bits = self.capacity * self.BITS_PER_KEY
        self.array = bytearray(self.bits // 8 + 1)
        self.count = 0
        stream = self.client.raw_stream(self.sql.named("all"), fmt="TabSeparated")
        try:  # streamed: a week of keys need not fit in memory as strings
            rest = b""
            while chunk := stream.read(1 << 20):
                *lines, rest = (rest + chunk).split(b"\n")
                for key in lines:
                    self.add(key.decode())
            if rest:
                self.add(rest.decode())
        finally:
            stream.close()

    def _positions(self, key: str):
        value = int(key, 16)  # keys are hex digests: their bits are the hashes
        low, high = value & 0xFFFFFFFFFFFFFFFF, (value >> 64) | 1
        return ((low + i * high) % self.bits for i in range(self.HASHES))

    def __contains__(self, key: str) -> bool:
        return all(self.array[p >> 3] & (1 << (p & 7)) for p in self._positions(key))

    def add(self, key: str) -> None:
        for p in self._positions(key):
            self.array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def add_stored(self, keys: list[str]) -> None:
        """A group's keys, once its INSERT returned."""
        for key in keys:
            self.add(key)
        if self.count > self.capacity:  # too full to stay ~1%: rebuilt, larger
            self._load(2 * self.capacity)

