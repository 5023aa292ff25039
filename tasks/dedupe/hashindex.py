"""Near-neighbour search over 64-bit perceptual hashes by multi-index hashing.

Comparing every hash with every other is n²/2 popcounts: a million images take hours.
Multi-index hashing (Norouzi, Punjani, Fleet 2012) cuts each hash into m chunks. If two
hashes differ in at most r bits, then by the pigeonhole principle at least one chunk
differs in at most r // m bits, so the candidates of a query are the hashes that share
one chunk up to r // m flipped bits. Each chunk has a table (bucket starts over all its
2^b values, a counting sort), so finding a chunk's bucket is one array lookup; the
candidates are then checked with a real Hamming distance. The result is exact, the same
pairs as brute force, and m is chosen for the number of hashes and the radius.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

MAX_CHUNK_BITS = 22  # a chunk table has 2^b + 1 int64 entries (32 MiB at 22 bits)
_BLOCK_CANDIDATES = 4_000_000  # candidates checked at once, bounds memory


def to_uint64(hex_hashes) -> np.ndarray:
    """Hex strings (imagehash's str()) to an array of unsigned 64-bit integers."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int16)


def _chunk_bounds(m: int) -> list[tuple[int, int]]:
    """(shift, bits) of m chunks covering 64 bits as evenly as possible."""
    sizes = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + sizes[:-1])
    return [(int(s), b) for s, b in zip(shifts, sizes)]


def _ball(bits: int, radius: int) -> np.ndarray:
    """All b-bit masks with at most `radius` bits set (the XORs to enumerate)."""
    masks = [0]
    for r in range(1, min(radius, bits) + 1):
        masks.extend(sum(1 << i for i in flip) for flip in combinations(range(bits), r))
    return np.array(masks, dtype=np.int64)


def _ball_size(bits: int, radius: int) -> int:
    return sum(comb(bits, r) for r in range(min(radius, bits) + 1))


def choose_chunks(n: int, radius: int) -> int:
    """The number of chunks with the least expected work for n uniform hashes.

    Per query: m * |ball| table lookups (random reads, weighted twice: measured) plus
    m * |ball| * n / 2^b candidate checks (contiguous reads); building: m tables of
    2^b entries. Real hashes are less uniform, which only adds
    candidates, never misses any.
    """
    best, best_cost = 3, float("inf")
    for m in range(3, 65):
        bits = max(b for _, b in _chunk_bounds(m))
        if bits > MAX_CHUNK_BITS:
            continue
        ball = _ball_size(bits, radius // m)
        cost = m * (2**bits) / max(n, 1) + m * ball * (2 + n / 2**bits)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


class HashIndex:
    """Exact radius search over fixed 64-bit hashes (build once, query many)."""

    def __init__(self, hashes: np.ndarray, radius: int, chunks: int | None = None) -> None:
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.radius = int(radius)
        self.chunks = chunks or choose_chunks(len(self.hashes), self.radius)
        self._sub_radius = self.radius // self.chunks
        self._tables = []
        for shift, bits in _chunk_bounds(self.chunks):
            keys = self._chunk(self.hashes, shift, bits)
            order = np.argsort(keys, kind="stable").astype(np.int64)
            starts = np.zeros(2**bits + 1, dtype=np.int64)
            np.cumsum(np.bincount(keys, minlength=2**bits), out=starts[1:])
            self._tables.append((shift, bits, order, starts, _ball(bits, self._sub_radius), self.hashes[order]))

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def _chunk(hashes: np.ndarray, shift: int, bits: int) -> np.ndarray:
        return ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)

    def search(self, queries: np.ndarray, radius: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query index, hash index, distance) with distance <= radius, sorted.

        `radius` may be lower than the index's, never higher (the chunk radius was set
        for the index's radius).
        """
        radius = self.radius if radius is None else int(radius)
        if radius > self.radius:
            raise ValueError(f"radius {radius} exceeds the index radius {self.radius}")
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        empty = np.empty(0, dtype=np.int64)
        if not len(queries) or not len(self.hashes):
            return empty, empty, empty.astype(np.int16)
        per_query = sum(len(t[4]) * (1 + len(self.hashes) / 2 ** t[1]) for t in self._tables)
        block = max(1, int(_BLOCK_CANDIDATES / per_query))
        found = [self._search_block(queries, start, min(start + block, len(queries)), radius)
                 for start in range(0, len(queries), block)]
        q = np.concatenate([f[0] for f in found])
        h = np.concatenate([f[1] for f in found])
        d = np.concatenate([f[2] for f in found])
        return q, h, d

    def _search_block(self, queries: np.ndarray, start: int, stop: int, radius: int):
        block = queries[start:stop]
        qs, hs = [], []
        for shift, bits, order, starts, ball, bucketed in self._tables:
            keys = (self._chunk(block, shift, bits)[:, None] ^ ball[None, :]).ravel()
            lo = starts[keys]
            counts = starts[keys + 1] - lo
            total = int(counts.sum())
            if not total:
                continue
            # candidate k of key i sits at bucketed[lo[i] + k]: one contiguous run per key
            pos = np.arange(total) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
            owner = np.repeat(np.arange(start, stop).repeat(len(ball)), counts)
            keep = hamming(queries[owner], bucketed[pos]) <= radius
            qs.append(owner[keep])
            hs.append(order[pos[keep]])
        q, h = np.concatenate(qs or [np.empty(0, np.int64)]), np.concatenate(hs or [np.empty(0, np.int64)])
        pair = np.unique(q * len(self.hashes) + h)  # a pair found through several chunks counts once
        q, h = pair // len(self.hashes), pair % len(self.hashes)
        return q, h, hamming(queries[q], self.hashes[h])

    def pairs(self, radius: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The self-join: all (i, j, distance) with i < j and distance <= radius."""
        i, j, d = self.search(self.hashes, radius)
        keep = i < j
        return i[keep], j[keep], d[keep]


def brute_force(queries: np.ndarray, hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The all-pairs answer, block by block: the reference for tests and the benchmark."""
    queries = np.asarray(queries, dtype=np.uint64)
    hashes = np.asarray(hashes, dtype=np.uint64)
    qs, hs = [], []
    block = max(1, 2_000_000 // max(len(hashes), 1))
    for start in range(0, len(queries), block):
        dist = hamming(queries[start : start + block, None], hashes[None, :])
        q, h = np.nonzero(dist <= radius)
        qs.append(q + start)
        hs.append(h)
    q = np.concatenate(qs) if qs else np.empty(0, dtype=np.int64)
    h = np.concatenate(hs) if hs else np.empty(0, dtype=np.int64)
    return q.astype(np.int64), h.astype(np.int64), hamming(queries[q], hashes[h])
