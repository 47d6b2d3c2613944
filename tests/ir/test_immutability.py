"""No public function of the IR layer mutates its input, and IR arrays are read-only."""
import numpy as np
import pytest
from hypothesis import given

from ir.analysis import use_def
from ir.equality import structural_diff
from ir.interpret import evaluate
from ir.serialize import from_parts, load, save, tensors_of, to_parts
from ir.text import parse_program, print_program
from ir.validate import validate
from tests.ir.programs import inputs_for, programs, sample_program


def _snapshot(p):
    """Digest plus a copy of every array, to catch in-place writes the digest memo would hide."""
    return p.digest, [(np.array(op.attrs["val"])) for _, op in p.walk() if "val" in op.attrs]


def _same(p, snap):
    digest, arrays = snap
    from ir.digest import program_digest
    assert program_digest(p) == digest  # recomputed, not the memo
    now = [op.attrs["val"] for _, op in p.walk() if "val" in op.attrs]
    assert len(now) == len(arrays)
    for a, b in zip(now, arrays):
        np.testing.assert_array_equal(a, b)


def _clear_memos(p):
    # recompute fingerprints from scratch so a mutation could not hide behind a memo
    for _, op in p.walk():
        object.__setattr__(op, "_fp", None)


@given(programs())
def test_public_functions_do_not_mutate_their_input(tmp_path_factory, p):
    snap = _snapshot(p)
    path = tmp_path_factory.mktemp("imm") / "p.wpz"
    text = print_program(p)
    parse_program(text, tensors=tensors_of(p))
    validate(p)
    graph, tensors = to_parts(p)
    from_parts(graph, tensors)
    save(p, path)
    load(path)
    structural_diff(p, p)
    use_def(p.main)
    feed = inputs_for(p)
    feed_copy = {k: v.copy() for k, v in feed.items()}
    evaluate(p, feed)
    for k in feed:
        np.testing.assert_array_equal(feed[k], feed_copy[k])
    _clear_memos(p)
    _same(p, snap)


def test_writing_into_a_const_raises():
    p = sample_program()
    with pytest.raises(ValueError):
        p.main.ops[0].attrs["val"][...] = 1
    with pytest.raises(ValueError):
        p.main.ops[0].outputs[0].val[0, 0] = 1


def test_arrays_loaded_or_parsed_are_read_only(tmp_path):
    p = sample_program()
    save(p, tmp_path / "p.wpz")
    for q in (load(tmp_path / "p.wpz"), parse_program(print_program(p), tensors=tensors_of(p)),
              from_parts(*to_parts(p))):
        for _, op in q.walk():
            if "val" in op.attrs:
                with pytest.raises(ValueError):
                    op.attrs["val"][...] = 0


def test_nodes_are_frozen():
    p = sample_program()
    op = p.main.ops[0]
    with pytest.raises(AttributeError):
        op.name = "other"
    with pytest.raises(TypeError):
        op.attrs["val"] = None
    n = len(p.main.ops)
    longer = p.main.block.ops.append(op)  # persistent: a new vector, the old one unchanged
    assert len(longer) == n + 1 and len(p.main.ops) == n
