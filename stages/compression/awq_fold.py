"""Where a per-input-channel scale can be folded exactly: AWQ's fold groups of a function.

A weight W read by a linear / matmul (its input x) can take x's channel c multiplied by s_c
(W' = W diag(s) along W's input axis) when whatever made x can take channel c divided by s_c
without changing anything else. The *producer* divides; every op between it and W must carry
the division through unchanged; every reader of the producer's output must take the scale.

    producer (absorbs 1/s)                     path (carries it)                reader (takes s)
    layer_norm(x, gamma, beta), last axis  --> reshape / transpose         -->  linear.weight
    mul(x, const vector g)                     expand_dims / squeeze            matmul.y (2-D const)
    linear / matmul with a const weight        mul / real_div by a const        onnx.MatMul.in1
      (its output channels, + const bias)      add / sub of a const (absorbs)
                                               matmul, as its right operand
                                               relu (relu(x / s) = relu(x) / s, s > 0)

Example (the attention V -> output projection path of a BERT layer):

    v = x @ Wv + bv;  reshape [B,T,H*D] -> [B,T,H,D];  transpose (0,2,1,3);  P @ v;
    transpose (0,2,1,3);  reshape -> [B,T,H*D];  @ Wo

Wv's column c and bv[c] are divided by s_c, Wo's row c multiplied by s_c: P @ v is linear in
v and keeps its last axis, and the reshapes / transposes only move channel c around.

How: the producer's output gets a *tag*, an int array broadcastable to the tensor holding
the producer channel of each element (arange(C) along the last axis). Each op on the path
maps the tag as it maps the data (a transpose permutes it, a reshape re-splits the run of
axes it varies on, which needs the static sizes of the axes after that run), so at a reader
the tag, which must vary along the reader's feature axis only, says which producer channel
each input channel of W carries. A shared input (query, key and value after one norm) is one
group: every reader takes the same s. A reshape whose sizes are unknown, an op not in the
table, another activation added or multiplied (a residual), a model output on the way, a
weight or constant also read elsewhere: the group is refused with that reason.

``fold_groups(fn) -> (groups, reader_of)``: groups by producer op name (a Group, or a Skip
with the reason), and each candidate reader weight's producer name (or a Skip: its input
comes from no producer, and why). ``apply(values, group, s)`` -> the new values of the
consts the group changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ir.analysis import use_def
from ir.core import Function, Op, Var
from stages.compression.weights import Skip

SHAPE_READERS = frozenset({"onnx.Shape", "shape"})
# positively homogeneous: f(x / s) = f(x) / s for every s > 0
HOMOGENEOUS = frozenset({"relu", "onnx.Relu"})
_DATA = {"reshape": "x", "onnx.Reshape": "in0", "transpose": "x", "onnx.Transpose": "in0",
         "expand_dims": "x", "squeeze": "x"}
# op type -> (left slot, right slot) of a matrix product
_MATMUL = {"matmul": ("x", "y"), "onnx.MatMul": ("in0", "in1")}


@dataclass(frozen=True)
class Change:
    """One const a fold rewrites: value' = value / s[index] (``divide``) or value * s[index],
    ``index`` broadcast against ``shape`` (the new value's shape: a const broadcast along an
    axis the scale varies on grows to it)."""
    const: str
    index: np.ndarray
    shape: tuple
    divide: bool


@dataclass(frozen=True)
class ReaderSite:
    """A weight that takes s on its input channels: W [..] read by `op` as a matrix with
    (output axis, input axis) = `axes`; index[j]: the producer channel of input channel j."""
    weight: str
    op: str
    axes: tuple
    index: np.ndarray


@dataclass(frozen=True)
class Group:
    producer: str       # op name
    kind: str           # "norm" | "mul" | "linear"
    channels: int
    readers: tuple      # ReaderSite, in program order
    changes: tuple      # Change: the producer side (divide) and the readers (multiply)
    path: tuple         # op types the scale passes through, sorted, without repeats

    @property
    def reader_names(self) -> tuple:
        return tuple(r.weight for r in self.readers)


# ---- reading the graph ---------------------------------------------------------------------

def _const(v) -> Optional[np.ndarray]:
    return None if v is None or isinstance(v, tuple) else v.val


def _flag(op: Op, name: str) -> bool:
    v = op.get(name)
    return bool(v is not None and v.val is not None and np.asarray(v.val).reshape(-1)[0])


def _float_const(v) -> bool:
    val = _const(v)
    return val is not None and np.asarray(val).dtype.kind == "f"


def _desc(op: Op) -> str:
    return f"{op.op_type} {op.name!r}"


def _rank(var) -> Optional[int]:
    """The rank of a tensor value, None when unknown (or not a tensor)."""
    shape = getattr(var.type, "shape", None)
    return None if shape is None else len(shape)


def reader_slot(op: Op):
    """(weight Var, input Var, feature axis of the input, (output axis, input axis) of the
    weight) when `op` reads a 2-D float const as the weight of a linear / matmul; else None."""
    if op.op_type == "linear":
        w = op.inputs.get("weight")
        if _float_const(w) and w.val.ndim == 2:
            return w, op.inputs["x"], -1, (0, 1)
        return None
    if op.op_type in _MATMUL:
        left, right = _MATMUL[op.op_type]
        w, x = op.inputs.get(right), op.inputs.get(left)
        if not _float_const(w) or w.val.ndim != 2 or x is None or x.val is not None:
            return None
        ty = op.op_type == "matmul" and _flag(op, "transpose_y")
        feature = -2 if op.op_type == "matmul" and _flag(op, "transpose_x") else -1
        return w, x, feature, ((0, 1) if ty else (1, 0))
    return None


def _known_ints(var: Var, ud) -> Optional[list]:
    """The values of a small 1-D int tensor as far as they are known (None per unknown entry):
    a const, or a concat along axis 0 of pieces some of which are consts (a reshape's target
    built from Shape / Gather of the input and constants, as exporters write it)."""
    if var.val is not None:
        return [int(v) for v in np.asarray(var.val).reshape(-1)]
    op = ud.producer(var)
    if op is None or op.op_type != "concat" or _const(op.inputs.get("axis")) is None \
            or int(np.asarray(op.inputs["axis"].val)) != 0:
        return None
    out = []
    for piece in op.inputs["values"]:
        if piece.val is not None:
            out += [int(v) for v in np.asarray(piece.val).reshape(-1)]
        elif _rank(piece) == 1 and isinstance(piece.shape[0], int):
            out += [None] * piece.shape[0]
        else:
            return None
    return out


def _reshape_dims(op: Op, ud, in_shape: tuple, out_var: Var) -> list:
    """The output dims of a reshape as far as they are known: the output type's int dims,
    else the target's known entries (0 copies the input dim, -1 is unknown)."""
    dims = [d if isinstance(d, int) else None for d in out_var.shape]
    for reader in ud.consumers_of(out_var):  # a weight fixes the size of its input's feature axis
        found = reader_slot(reader)
        if found is not None and found[1].name == out_var.name and dims:
            f = found[2] % len(dims)
            dims[f] = dims[f] if dims[f] is not None else int(found[0].val.shape[found[3][1]])
    target = op.inputs.get("shape" if op.op_type == "reshape" else "in1")
    known = _known_ints(target, ud) if target is not None else None
    if known is None or len(known) != len(dims):
        return dims
    copy_zero = op.op_type == "reshape" or not int(op.attrs.get("allowzero", 0))
    for i, k in enumerate(known):
        if dims[i] is not None or k is None:
            continue
        if k > 0:
            dims[i] = k
        elif k == 0 and copy_zero and i < len(in_shape) and isinstance(in_shape[i], int):
            dims[i] = in_shape[i]
    return dims


# ---- how each op on the path maps the tag ---------------------------------------------------

def _align(tag: np.ndarray, rank: int) -> np.ndarray:
    return tag.reshape((1,) * (rank - tag.ndim) + tag.shape) if tag.ndim < rank else tag


def _axes_covering(op, out, end: int, size: int):
    """(start, product): output axes start..end-1, taken from `end` backwards until their sizes
    multiply to at least `size`; a Skip when one of them is not static."""
    start, product = end, 1
    while product < size and start > 0:
        start -= 1
        if out[start] is None:
            return Skip(f"{_desc(op)}: output size {start} is not static")
        product *= out[start]
    return start, product


def _reshape_tag(tag, op, ud, in_var, out_var):
    """The tag of a reshape's output, or a Skip: the run of axes the tag varies on is re-split
    into the output axes holding the same elements (found from the static sizes after it)."""
    in_shape, rank_out = tuple(in_var.shape), len(out_var.shape)
    vary = [a for a in range(tag.ndim) if tag.shape[a] > 1]
    if not vary:
        return tag.reshape((1,) * rank_out)
    i, j = vary[0], vary[-1] + 1
    dims = in_shape[i:]
    if len(in_shape) != tag.ndim or not all(isinstance(d, int) for d in dims):
        return Skip(f"{_desc(op)}: the input's sizes from axis {i} on are not static ({in_shape})")
    run, after = tuple(in_shape[i:j]), int(np.prod(in_shape[j:], dtype=np.int64))
    n = int(np.prod(run, dtype=np.int64))
    out = _reshape_dims(op, ud, in_shape, out_var)
    found = _axes_covering(op, out, rank_out, after)
    if isinstance(found, Skip):
        return found
    l, p = found
    found = _axes_covering(op, out, l, n)
    if isinstance(found, Skip):
        return found
    k, q = found
    if p != after or q != n:
        return Skip(f"{_desc(op)}: the scaled axes {run} do not map onto whole output axes")
    if any(tag.shape[a] not in (1, in_shape[a]) for a in range(i, j)):
        return Skip(f"{_desc(op)}: the scale does not line up with its input")
    moved = np.broadcast_to(tag.reshape(tag.shape[i:j]), run)
    return moved.reshape((1,) * k + tuple(out[k:l]) + (1,) * (rank_out - l))


def _perm(op: Op, rank: int):
    if op.op_type == "transpose":
        return [int(p) for p in np.asarray(op.inputs["perm"].val).reshape(-1)]
    perm = op.attrs.get("perm")
    return list(range(rank))[::-1] if perm is None else [int(p) for p in perm]


def _axes(op: Op):
    v = op.inputs.get("axes")
    return None if v is None or v.val is None else [int(a) for a in np.asarray(v.val).reshape(-1)]


def _layout_tag(tag, op, ud, in_var, out_var):
    if op.op_type in ("reshape", "onnx.Reshape"):
        return _reshape_tag(tag, op, ud, in_var, out_var)
    if op.op_type in ("transpose", "onnx.Transpose"):
        return tag.transpose(_perm(op, tag.ndim))
    axes = _axes(op)
    if axes is None:  # squeeze of every size-1 axis: which ones depends on sizes we may not know
        return Skip(f"{_desc(op)}: no constant axes")
    if op.op_type == "expand_dims":
        rank = tag.ndim + len(axes)
        return np.expand_dims(tag, tuple(a + rank if a < 0 else a for a in axes))
    return tag.squeeze(tuple(a + tag.ndim if a < 0 else a for a in axes))


def _matmul_right_tag(tag, op, out_var):
    """P @ v with v tagged: the product keeps v's last axis and its batch axes, and sums over
    v's axis -2, so the tag must not vary along that axis."""
    left = op.inputs[_MATMUL[op.op_type][0]]
    ty = op.op_type == "matmul" and _flag(op, "transpose_y")
    if tag.ndim < 2 or len(left.shape) < 2:
        return Skip(f"{_desc(op)}: a vector operand")
    t = np.swapaxes(tag, -1, -2) if ty else tag
    if t.shape[-2] != 1:
        return Skip(f"{_desc(op)}: the scale varies along the summed axis")
    return _align(t, len(out_var.shape))


def _elementwise_change(const: Var, tag: np.ndarray, rank: int) -> Change:
    """const' = const / s[tag], the const broadcast up to the axes the tag varies on (leading
    size-1 axes dropped back to the const's rank)."""
    val = np.asarray(const.val)
    t = _align(tag, rank)
    full = np.broadcast_shapes(_fit(val.shape, (0,) * rank), t.shape)
    shape = tuple(full)
    while len(shape) > val.ndim and shape[0] == 1:
        shape = shape[1:]
    index = np.broadcast_to(t, full).reshape(shape)
    return Change(const.name, np.ascontiguousarray(index), shape, True)


# ---- producers -----------------------------------------------------------------------------

def _fresh_tag(out_var: Var, channels: int) -> np.ndarray:
    return np.arange(channels).reshape((1,) * (len(out_var.shape) - 1) + (channels,))


def _producer(op: Op):
    """(kind, channels, changes) when `op` can absorb a per-channel division of its output's
    last axis, a Skip saying why not for a norm / product that almost can, else None."""
    out = op.outputs[0] if op.outputs else None
    rank = None if out is None else _rank(out)
    if not rank:
        return None
    if op.op_type == "layer_norm":
        gamma, beta = op.inputs.get("gamma"), op.inputs.get("beta")
        axes = _axes(op)
        if axes is not None and sorted(a % rank for a in axes) != [rank - 1]:
            return Skip(f"{_desc(op)} normalises over more than the last axis")
        if gamma is None or not _float_const(gamma) or (beta is not None and not _float_const(beta)):
            return Skip(f"{_desc(op)} has no constant gamma / beta to absorb the scale")
        c = int(np.asarray(gamma.val).shape[-1]) if np.ndim(gamma.val) else None
        if c is None or c < 2 or int(np.prod(np.shape(gamma.val))) != c:
            return Skip(f"{_desc(op)}: gamma is not one value per channel")
        tag = _fresh_tag(out, c)
        changes = [_elementwise_change(v, tag, rank) for v in (gamma, beta) if v is not None]
        return "norm", c, changes
    if op.op_type == "mul":
        consts = [v for v in (op.inputs["x"], op.inputs["y"]) if v.val is not None]
        if len(consts) != 1 or not _float_const(consts[0]):
            return None
        g = np.asarray(consts[0].val)
        if g.ndim == 0 or g.shape[-1] < 2 or g.size != g.shape[-1]:
            return None  # a scalar (or not a vector along the last axis): a path op, not a producer
        tag = _fresh_tag(out, g.shape[-1])
        return "mul", g.shape[-1], [_elementwise_change(consts[0], tag, rank)]
    if op.op_type == "linear" and _float_const(op.inputs.get("weight")):
        w = op.inputs["weight"]
        c = w.val.shape[0]
        changes = [Change(w.name, np.arange(c)[:, None], w.val.shape, True)]
        bias = op.inputs.get("bias")
        if bias is not None:
            if not _float_const(bias):
                return Skip(f"{_desc(op)}: its bias is not a constant")
            changes.append(Change(bias.name, np.arange(c), bias.val.shape, True))
        return "linear", c, changes
    if op.op_type in _MATMUL:
        left, right = _MATMUL[op.op_type]
        w = op.inputs.get(right)
        if not _float_const(w) or w.val.ndim != 2 or op.inputs[left].val is not None:
            return None
        axis = 0 if op.op_type == "matmul" and _flag(op, "transpose_y") else 1
        c = w.val.shape[axis]
        index = np.arange(c)[:, None] if axis == 0 else np.arange(c)[None, :]
        return "linear", c, [Change(w.name, index, w.val.shape, True)]
    return None


def _upstream(op: Op, var: Var) -> Optional[Var]:
    """The input a path op carries the scale from (walking back from its output), or None."""
    if op.op_type in _DATA:
        return op.inputs[_DATA[op.op_type]]
    if op.op_type in HOMOGENEOUS and len(op.inputs) == 1:
        return next(iter(op.inputs.values()))
    if op.op_type in _MATMUL:
        return op.inputs[_MATMUL[op.op_type][1]]
    if op.op_type in ("add", "sub", "mul", "real_div"):
        x, y = op.inputs["x"], op.inputs["y"]
        if y.val is not None and x.val is None:
            return x
        if x.val is not None and y.val is None and op.op_type != "real_div":
            return y
    return None


def find_producer(x: Var, ud):
    """The op whose output reaches `x` through path ops only, or a Skip saying what is in the way."""
    var = x
    for _ in range(10000):
        op = ud.producer(var)
        if op is None:
            return Skip(f"its input {x.name!r} comes from the model input {var.name!r}: nothing to absorb the scale")
        found = _producer(op)
        if isinstance(found, Skip):
            return found
        if found is not None:
            return op
        nxt = _upstream(op, var)
        if nxt is None:
            return Skip(f"its input comes from {_desc(op)}, which no per-channel scale passes exactly")
        var = nxt
    return Skip("path too long")  # pragma: no cover - a cycle cannot occur in SSA


# ---- following the scale forward -----------------------------------------------------------

def _slots(op: Op, name: str) -> list:
    found = []
    for slot, v in op.inputs.items():
        if isinstance(v, tuple):
            if any(x.name == name for x in v):
                found.append(slot)
        elif v.name == name:
            found.append(slot)
    return found


def _other(op: Op, slot: str) -> Var:
    return op.inputs["y" if slot == "x" else "x"]


def _step(op: Op, slot: str, tag: np.ndarray, ud, what: str):
    """What the scale does at `op` (read in `slot`): ("path", out Var, tag, [Change]),
    ("reader", ReaderSite, Change), ("shape",), or a Skip."""
    if op.op_type in SHAPE_READERS:
        return ("shape",)
    if not op.outputs or any(_rank(v) is None for v in (*op.input_vars(), *op.outputs)):
        return Skip(f"{what} reaches {_desc(op)}, which has a value of unknown rank")
    out = op.outputs[0]
    if op.op_type in _DATA and slot == _DATA[op.op_type]:
        t = _layout_tag(tag, op, ud, op.inputs[slot], out)
        return t if isinstance(t, Skip) else ("path", out, t, [])
    if op.op_type in HOMOGENEOUS and len(op.inputs) == 1:
        return ("path", out, tag, [])
    if op.op_type in ("add", "sub", "mul", "real_div") and slot in ("x", "y"):
        other = _other(op, slot)
        if other.val is None:
            return Skip(f"{what} feeds {_desc(op)} together with another activation (a residual?)")
        if op.op_type == "real_div" and slot == "y":
            return Skip(f"{what} is the divisor of {_desc(op)}")
        rank = len(out.shape)
        if op.op_type in ("mul", "real_div"):
            return ("path", out, _align(tag, rank), [])
        if not _float_const(other):
            return Skip(f"{_desc(op)}: its constant {other.name!r} is not a float")
        if len(ud.consumers_of(other)) != 1 or ud.is_block_output(other):
            return Skip(f"{_desc(op)}: its constant {other.name!r} is also read elsewhere")
        return ("path", out, _align(tag, rank), [_elementwise_change(other, tag, rank)])
    if op.op_type in _MATMUL:
        left, right = _MATMUL[op.op_type]
        if slot == right:
            t = _matmul_right_tag(tag, op, out)
            return t if isinstance(t, Skip) else ("path", out, t, [])
        found = reader_slot(op)
        if slot == left and found is not None:
            return _reader(op, found, tag, ud)
        return Skip(f"{what} is the left operand of {_desc(op)}, whose right operand is not a 2-D constant")
    if op.op_type == "linear" and slot == "x":
        found = reader_slot(op)
        if found is None:
            return Skip(f"{_desc(op)} has no 2-D constant weight")
        return _reader(op, found, tag, ud)
    return Skip(f"{what} reaches {_desc(op)}, which no per-channel scale passes exactly")


def _reader(op: Op, found, tag: np.ndarray, ud):
    w, x, feature, axes = found
    t = _align(tag, len(x.shape)) if len(x.shape) >= tag.ndim else tag
    if t.ndim != len(x.shape) or t.ndim == 0:
        return Skip(f"{_desc(op)}: the scale does not line up with its input")
    f = feature % t.ndim
    if any(t.shape[a] != 1 for a in range(t.ndim) if a != f):
        return Skip(f"{_desc(op)}: the scale varies along an axis other than its input channels")
    if len(ud.consumers_of(w)) != 1 or ud.is_block_output(w):
        return Skip(f"weight {w.name!r} is also read elsewhere")
    cols = w.val.shape[axes[1]]
    if t.shape[f] not in (1, cols):
        return Skip(f"{_desc(op)}: the scale does not line up with its input channels")
    index = np.ascontiguousarray(np.broadcast_to(t.reshape(-1), (cols,)))
    shape = [1, 1]
    shape[axes[1]] = cols
    site = ReaderSite(w.name, op.name, axes, index)
    return ("reader", site, Change(w.name, index.reshape(shape), w.val.shape, False))


def follow(producer: Op, fn: Function):
    """The Group of `producer` (module docstring), or a Skip with the first reason it fails."""
    ud = use_def(fn)
    found = _producer(producer)
    if found is None or isinstance(found, Skip):
        return found or Skip(f"{_desc(producer)} cannot absorb a scale")
    kind, channels, changes = found
    top = {id(o) for o in fn.block.ops}
    what = f"the output of {_desc(producer)}"
    readers, path = [], set()
    changes = list(changes)
    out = producer.outputs[0]
    queue, seen_ops = [(out, _fresh_tag(out, channels))], set()
    while queue:
        var, tag = queue.pop(0)
        if ud.is_block_output(var):
            return Skip(f"{what} reaches the model output {var.name!r}")
        for op in ud.consumers_of(var):
            if id(op) not in top:
                return Skip(f"{what} is read inside a nested block ({_desc(op)})")
            slots = _slots(op, var.name)
            if len(slots) != 1 or op.name in seen_ops:
                return Skip(f"{what} reaches {_desc(op)} through more than one input")
            seen_ops.add(op.name)
            got = _step(op, slots[0], tag, ud, what)
            if isinstance(got, Skip):
                return got
            if got[0] == "path":
                path.add(op.op_type)
                changes += got[3]
                queue.append((got[1], got[2]))
            elif got[0] == "reader":
                readers.append(got[1])
                changes.append(got[2])
    if not readers:
        return Skip(f"no linear / matmul weight reads {what}")
    divided = {c.const for c in changes if c.divide}
    for const in producer.input_vars():  # the path's constants were checked where they were met
        if const.name in divided and (len(ud.consumers_of(const)) != 1 or ud.is_block_output(const)):
            return Skip(f"{_desc(producer)}: its constant {const.name!r} is also read elsewhere")
    order = {op.name: i for i, op in enumerate(fn.block.ops)}
    readers.sort(key=lambda r: order[r.op])
    return Group(producer.name, kind, channels, tuple(readers), tuple(changes), tuple(sorted(path)))


def fold_groups(fn: Function):
    """({producer op name: Group or Skip}, {reader weight name: producer op name or Skip})
    over every 2-D const weight of a linear / matmul at the top level of `fn`."""
    ud = use_def(fn)
    groups, reader_of = {}, {}
    for op in fn.block.ops:
        found = reader_slot(op)
        if found is None:
            continue
        w, x = found[0], found[1]
        readers = ud.consumers_of(w)
        if len(readers) != 1 or ud.is_block_output(w):
            others = ", ".join(_desc(r) for r in readers if r is not op) or "a model output"
            reader_of[w.name] = Skip(f"weight {w.name!r} is also read elsewhere ({others})")
            continue
        producer = find_producer(x, ud)
        if isinstance(producer, Skip):
            reader_of[w.name] = producer
            continue
        if producer.name not in groups:
            groups[producer.name] = follow(producer, fn)
        g = groups[producer.name]
        reader_of[w.name] = g if isinstance(g, Skip) else producer.name
    return groups, reader_of


def apply(values: Mapping, group: Group, s: np.ndarray) -> dict:
    """{const name: new value} of the consts `group` changes, from their current `values`
    (float64 arithmetic, rounded once to each const's dtype)."""
    s = np.asarray(s, np.float64)
    out = {}
    for c in group.changes:
        old = np.asarray(out.get(c.const, values[c.const]))
        full = np.broadcast_to(old.astype(np.float64).reshape(_fit(old.shape, c.shape)), c.shape)
        f = s[c.index]
        out[c.const] = (full / f if c.divide else full * f).astype(old.dtype)
    return out


def _fit(shape: tuple, target: tuple) -> tuple:
    """`shape` with leading 1s so it has `target`'s rank."""
    return (1,) * (len(target) - len(shape)) + tuple(shape)
