"""FrozenMap: the small immutable mapping an op holds its inputs and attrs in.

An op has two to six entries; pyrsistent's pmap costs ~3 us to build one of
that size, a dict subclass ~0.2 us, and an op is built per rewrite, so for
these tiny per-op maps the dict wins (benchmarks/bench_ir.py). It answers the
pmap calls stages use (set / discard / remove / update return a new map) and
refuses every in-place change.
"""
from __future__ import annotations


class FrozenMap(dict):
    __slots__ = ()

    def _immutable(self, *args, **kwargs):
        raise TypeError("FrozenMap is immutable: use .set() / .discard(), which return a new map")

    __setitem__ = __delitem__ = _immutable
    clear = pop = popitem = setdefault = __ior__ = _immutable

    def set(self, key, value) -> "FrozenMap":
        new = dict(self)
        new[key] = value
        return FrozenMap(new)

    def discard(self, key) -> "FrozenMap":
        if key not in self:
            return self
        return FrozenMap({k: v for k, v in self.items() if k != key})

    def remove(self, key) -> "FrozenMap":
        if key not in self:
            raise KeyError(key)
        return self.discard(key)

    def update(self, *maps, **kw) -> "FrozenMap":  # pmap semantics: a new map
        new = dict(self)
        for m in maps:
            new.update(m)
        new.update(kw)
        return FrozenMap(new)

    def __reduce__(self):
        return (FrozenMap, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenMap({dict.__repr__(self)})"

    def __hash__(self):  # usable as a key when its values are hashable
        return hash(frozenset(self.items()))
