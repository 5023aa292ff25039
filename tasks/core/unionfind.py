"""Disjoint sets, for duplicate clusters and the split's groups."""

from __future__ import annotations


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving; the smaller root wins, so results are stable)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
