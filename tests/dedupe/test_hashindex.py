"""The multi-index hash search must return exactly the brute-force pairs."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.dedupe.hashindex import HashIndex, brute_force, choose_chunks, to_uint64


def random_hashes(n: int, seed: int, near_share: float = 0.2) -> np.ndarray:
    """Uniform 64-bit hashes plus near copies (1 to 12 bits flipped), like real duplicates."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    picks = rng.integers(0, n, int(n * near_share))
    near = base[picks].copy()
    for row, flips in enumerate(rng.integers(1, 13, len(picks))):
        for bit in rng.choice(64, flips, replace=False):
            near[row] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, near])


def as_set(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("radius", [0, 1, 3, 6, 8, 10, 14])
def test_self_join_equals_brute_force(radius: int) -> None:
    hashes = random_hashes(3000, seed=radius)
    i, j, d = HashIndex(hashes, radius).pairs()
    q, h, dist = brute_force(hashes, hashes, radius)
    keep = q < h
    assert as_set(i, j) == as_set(q[keep], h[keep])
    assert len(i) == len(as_set(i, j)), "a pair reported twice"
    assert np.array_equal(d, np.bitwise_count(hashes[i] ^ hashes[j]))
    if radius >= 6:
        assert len(i) > 100  # the planted near copies are there to be found


@pytest.mark.parametrize("chunks", [3, 4, 5, 7, 11])
def test_every_chunking_is_exact(chunks: int) -> None:
    base = random_hashes(2000, seed=chunks)
    queries = random_hashes(300, seed=100 + chunks)
    queries[:50] = base[:50] ^ np.uint64(0b1011)  # 3 bits from a stored hash
    index = HashIndex(base, 6, chunks=chunks)
    q, h, d = index.search(queries)
    bq, bh, bd = brute_force(queries, base, 6)
    assert as_set(q, h) == as_set(bq, bh)
    assert set(range(50)) <= set(q.tolist())
    q4, h4, _ = index.search(queries, radius=4)  # a smaller radius on the same index
    bq4, bh4, _ = brute_force(queries, base, 4)
    assert as_set(q4, h4) == as_set(bq4, bh4)


def test_radius_above_the_index_radius_is_refused() -> None:
    index = HashIndex(random_hashes(100, seed=1), 4)
    with pytest.raises(ValueError, match="exceeds the index radius"):
        index.search(index.hashes[:3], radius=5)


def test_empty_inputs_and_hex_conversion() -> None:
    empty = HashIndex(np.empty(0, dtype=np.uint64), 6)
    assert len(empty.pairs()[0]) == 0
    hashes = to_uint64(["ffffffffffffffff", "0000000000000001", "8000000000000000"])
    assert hashes.tolist() == [2**64 - 1, 1, 2**63]
    i, j, d = HashIndex(hashes, 1).pairs()
    assert as_set(i, j) == set() and len(HashIndex(hashes[:1], 6).search(hashes)[0]) == 1


def test_chunk_choice_grows_chunk_size_with_the_data() -> None:
    """More hashes call for longer chunks (fewer candidates per bucket)."""
    assert choose_chunks(10**6, 6) <= choose_chunks(10**4, 6)
    for n in (10, 10**4, 10**6):
        assert 3 <= choose_chunks(n, 6) <= 64
