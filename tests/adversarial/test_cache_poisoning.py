"""Poisoned caches (issue 12, items 1, 7 and 8): a cache directory is input anyone with
write access to it can shape. Nothing in it may make weightpress read, write or delete a
file outside the cache, or return a program other than the one asked for; a cache that
cannot be written costs time, never the run; orphaned temporaries are swept safely."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import warnings
from pathlib import Path

import pytest

from pipeline import CacheCorruptionWarning, CacheWriteWarning, DiskCache, Pipeline
from stages.compression import affine_quantize_weights
from tests.adversarial import generators as gen
from tests.adversarial.conftest import as_root

PIPE = Pipeline([affine_quantize_weights(dtype="int8")])


@pytest.fixture
def warmed(tmp_path):
    """(cache root, input program, the right result) after one run filled the cache."""
    root = tmp_path / "cache"
    net = gen.small_program()
    result = PIPE.run(net, cache=DiskCache(root)).result
    return root, net, result


def _rerun(root, net):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = PIPE.run(net, cache=DiskCache(root))
        result = trace.result
    return trace, result, [w for w in caught if issubclass(w.category, (CacheCorruptionWarning,
                                                                         CacheWriteWarning))]


# ---- item 1: no escape -----------------------------------------------------------------------

def test_entry_output_cannot_reach_outside_the_cache(warmed, tmp_path):
    root, net, right = warmed
    victim = tmp_path / "victim.json"  # graphs/../../victim.json from inside the cache
    victim.write_text("the user's file, not JSON a cache would accept")
    gen.rewrite_json(gen.entry_files(root)[0], lambda doc: doc.update(output="../../victim"))
    trace, result, warned = _rerun(root, net)
    assert victim.read_text() == "the user's file, not JSON a cache would accept"
    assert result.digest == right.digest and not trace.steps[0].cached
    assert warned and "not a digest" in str(warned[0].message)


def test_tensor_table_key_cannot_reach_outside_the_cache(warmed, tmp_path):
    root, net, right = warmed
    victim = tmp_path / "victim.bin"  # tensors/../../victim.bin from inside the cache
    victim.write_bytes(b"the user's data")
    graph = gen.graph_files(root)[-1]

    def poison(doc):
        table = doc["tensors"]
        d = next(iter(table))
        table["../victim"] = table.pop(d)
    for g in gen.graph_files(root):
        gen.rewrite_json(g, poison)
    trace, result, warned = _rerun(root, net)
    assert victim.read_bytes() == b"the user's data"
    assert graph.parent.parent == root
    assert result.digest == right.digest
    assert warned


def test_a_symlinked_directory_is_neither_followed_nor_emptied(warmed, tmp_path):
    root, net, right = warmed
    outside = tmp_path / "outside"
    for sub in (root / "tensors").iterdir():  # every tensor directory now leads outside,
        target = outside / sub.name          # holding truncated copies of its files
        target.mkdir(parents=True)
        for f in sub.iterdir():
            (target / f.name).write_bytes(f.read_bytes()[:5])
            f.unlink()
        sub.rmdir()
        sub.symlink_to(target, target_is_directory=True)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    trace, result, warned = _rerun(root, net)
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before  # untouched
    assert result.digest == right.digest
    assert warned and all("outside the cache" in str(w.message) for w in warned)


def test_a_graph_symlink_to_a_user_file_is_not_followed(warmed, tmp_path):
    root, net, right = warmed
    secret = tmp_path / "secret.json"
    secret.write_text('{"format": "weightpress"}')
    for g in gen.graph_files(root):
        g.unlink()
        g.symlink_to(secret)
    _trace, result, warned = _rerun(root, net)
    assert secret.read_text() == '{"format": "weightpress"}'
    assert result.digest == right.digest and warned


def test_a_swapped_graph_file_is_detected_by_its_digest(warmed):
    """An entry's output names a graph file that holds another valid program: the loaded
    program's digest is checked against the name, so it is never returned."""
    root, net, right = warmed
    cache = DiskCache(root)
    cache.put_program(net)
    out_graph = cache._graph_path(right.digest)
    out_graph.write_bytes(cache._graph_path(net.digest).read_bytes())  # the input's graph
    trace, result, warned = _rerun(root, net)
    assert result.digest == right.digest and result.digest != net.digest
    assert warned and "does not match its name" in str(warned[0].message)


def test_an_invalid_program_with_a_matching_digest_is_refused(warmed):
    """A forged graph file named by its own (correct) digest that breaks the IR rules."""
    root, net, right = warmed
    cache = DiskCache(root)
    graph = json.loads(cache._graph_path(right.digest).read_text())
    for op in graph["functions"][0]["block"]["ops"]:
        if op["type"] == "relu":
            op["type"] = "frobnicate"
    from ir.serialize import from_parts

    tensors = {d: cache._load_tensor(d, info) for d, info in graph["tensors"].items()}
    forged = from_parts(graph, tensors)
    cache._graph_path(forged.digest).write_text(json.dumps(graph))
    gen.rewrite_json(gen.entry_files(root)[0], lambda doc: doc.update(output=forged.digest))
    _trace, result, warned = _rerun(root, net)
    assert result.digest == right.digest
    assert any("frobnicate" in str(w.message) for w in warned)


# ---- item 6: what used to escape as exceptions ------------------------------------------------

def test_an_entry_that_is_a_directory_is_repaired(warmed):
    root, net, right = warmed
    entry = gen.entry_files(root)[0]
    entry.unlink()
    (entry / "planted").mkdir(parents=True)
    trace, result, warned = _rerun(root, net)
    assert result.digest == right.digest and warned
    again, _, warned_again = _rerun(root, net)  # repaired: a hit, no warning
    assert again.steps[0].cached and not warned_again


def test_deeply_nested_entry_json_is_corruption(warmed):
    root, net, right = warmed
    gen.entry_files(root)[0].write_bytes(gen.nested_json())
    _trace, result, warned = _rerun(root, net)
    assert result.digest == right.digest and "nested too deeply" in str(warned[0].message)


def test_a_hostile_tensor_declaration_allocates_nothing(warmed):
    """The issue's dtype bomb, through the cache: a tensor table entry declaring numpy
    dtype S2000000000 over a valid one-item JSON file."""
    from tests.adversarial.conftest import address_space_cap

    root, net, right = warmed
    cache = DiskCache(root)
    from ir.digest import tensor_digest
    import numpy as np

    strings = np.array(["a"], dtype=object)
    d = tensor_digest(strings)
    path = cache._tensor_path(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'["a"]')

    def poison(doc):
        doc["tensors"][d] = {"dtype": "string", "numpy": "S2000000000", "shape": [1]}
    gen.rewrite_json(cache._graph_path(right.digest), poison)
    with address_space_cap(512 << 20), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert DiskCache(root).get_program(right.digest) is None
    assert any("not one the IR stores" in str(w.message) or "would take" in str(w.message) for w in caught)


# ---- item 7: a cache that cannot be written ----------------------------------------------------

def _unwritable(monkeypatch):
    """Every write into the cache fails as on a read-only file system (tests may run as root,
    whom chmod does not stop)."""
    import pipeline.diskcache as dc

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(dc, "_atomic_write", refuse)


def test_a_read_only_cache_warns_once_and_the_run_goes_on(warmed, monkeypatch):
    root, net, right = warmed
    _unwritable(monkeypatch)
    two = Pipeline([affine_quantize_weights(dtype="int8"), affine_quantize_weights(dtype="int4")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = two.run(net, cache=DiskCache(root))
        result = trace.result
    writes = [w for w in caught if issubclass(w.category, CacheWriteWarning)]
    assert len(writes) == 1 and "cannot be written" in str(writes[0].message)
    assert trace.steps[0].cached  # hits from the read-only cache keep working
    assert not trace.steps[1].cached and result.digest == two(net).digest


@pytest.mark.skipif(as_root, reason="chmod does not stop root")
def test_a_chmod_read_only_cache_warns_once(warmed):
    root, net, _right = warmed
    for p in [root, *root.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Pipeline([affine_quantize_weights(dtype="int4")]).run(net, cache=DiskCache(root)).result
        assert len([w for w in caught if issubclass(w.category, CacheWriteWarning)]) == 1
    finally:
        for p in [root, *root.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def test_the_cli_continues_with_a_read_only_cache(warmed, tmp_path, monkeypatch, capsys):
    from ir.serialize import save
    from pipeline.cli import main

    root, net, _right = warmed
    model, out = tmp_path / "m.wpz", tmp_path / "out.wpz"
    save(net, model)
    _unwritable(monkeypatch)
    code = main(["compress", str(model), "-o", str(out), "--quantize", "int4", "--cache", str(root), "-q"])
    err = capsys.readouterr().err
    assert code == 0 and out.exists()
    assert err.count("cannot be written") == 1 and "Traceback" not in err


# ---- item 8: orphaned temporaries ------------------------------------------------------------

def _plant(directory: Path, name: str, age: float) -> Path:
    p = directory / name
    p.write_bytes(b"half a tensor")
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_orphaned_temporaries_are_swept_on_open_but_live_ones_kept(warmed):
    root, net, _right = warmed
    tensors = next((root / "tensors").iterdir())
    old = _plant(tensors, ".tmp-killed1", 3600)
    old_graph = _plant(root / "graphs", ".tmp-killed2", 3600)
    fresh = _plant(tensors, ".tmp-writing", 5)  # a writer that just started
    locked = _plant(tensors, ".tmp-slowwriter", 3600)  # an old file a live writer still holds
    fd = os.open(locked, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        DiskCache(root)
        assert not old.exists() and not old_graph.exists()
        assert fresh.exists() and locked.exists()
    finally:
        os.close(fd)
    DiskCache(root)
    assert not locked.exists()  # released: now an orphan


def test_the_sweep_never_leaves_the_cache(warmed, tmp_path):
    root, net, _right = warmed
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victim = _plant(outside, ".tmp-users-file", 3600)
    sub = root / "tensors" / "zz"
    sub.symlink_to(outside, target_is_directory=True)
    DiskCache(root)
    assert victim.exists()


def test_size_accounting_ignores_temporaries(warmed):
    root, _net, _right = warmed
    cache = DiskCache(root, max_bytes=10 << 20)
    before = cache.disk_bytes()
    live = _plant(root / "graphs", ".tmp-live", 0)
    assert cache.disk_bytes() == before and live.exists()
