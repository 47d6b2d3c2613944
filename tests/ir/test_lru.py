"""ir.lru.LRU: least recently used goes first, a stale hit is recomputed, threads may share it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ir.lru import LRU


def test_the_least_recently_used_key_is_evicted():
    memo, calls = LRU(2), []

    def compute(k):
        return lambda: calls.append(k) or k * 10

    assert memo.get(1, compute(1)) == 10 and memo.get(2, compute(2)) == 20
    assert memo.get(1, compute(1)) == 10  # a hit: 1 is now the most recent
    memo.get(3, compute(3))  # evicts 2, not 1
    assert list(memo.items) == [1, 3]
    memo.get(2, compute(2))
    assert calls == [1, 2, 3, 2]


def test_a_hit_that_is_no_longer_valid_is_computed_again():
    memo = LRU(4)
    memo.get("k", lambda: ("old", 1))
    assert memo.get("k", lambda: ("new", 2), valid=lambda hit: hit[0] == "new") == ("new", 2)
    assert memo.get("k", lambda: ("newer", 3), valid=lambda hit: hit[0] == "new") == ("new", 2)


def test_threads_hammering_a_tiny_memo_get_their_own_values():
    memo = LRU(2)

    def work(i):
        return [memo.get(k, lambda k=k: k * k) == k * k for k in range(i % 7, i % 7 + 50)]

    with ThreadPoolExecutor(8) as pool:
        assert all(all(r) for r in pool.map(work, range(400)))
    assert len(memo.items) <= 2
