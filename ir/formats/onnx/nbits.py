"""The opt-in MatMulNBits form (com.microsoft): 4-bit per-block weights of MatMul / linear
fused into onnxruntime's quantized matmul, `export_onnx(program, path, matmul_nbits=True)`.

MatMulNBits computes Y = A @ ((q - zp) * scale)^T (+ bias) for a logical weight of N
rows and K columns: q are unsigned `bits`-bit codes packed LSB first, each row's K
codes cut in blocks of `block_size` (a power of two, 16 or more) along K; B is uint8
[N, k_blocks, block_size * bits / 8], scales [N, k_blocks] of A's type, zero points
uint8 [N, ceil(k_blocks * bits / 8)] packed the same way per row (absent: 2^(bits-1)).

A weight takes this form when it is a constexpr_blockwise_shift_scale of int4 / uint4
data, 2-D, blocked along its input dimension only, with a power-of-two block of 16 or
more, scales of A's type (fp32 or fp16), and
every reader of it is a `linear` (weight [N, K]) or a `matmul` reading it as y
([K, N], or [N, K] with transpose_y) with an activation of rank >= 2. int4 codes
shift by 8 to unsigned, with the offset (if any) shifted the same way: (x + 8) -
(o + 8) = x - o, so the numbers do not move. Anything else keeps its ordinary form,
and so do weights inside nested blocks (If / Loop bodies): the rewrite looks at the
function's own ops.

The rewrite is `rewrite(program)`: each such reader becomes a foreign
`onnx.MatMulNBits` op (the exporter writes foreign ops as they are) and the weight's
constexpr op goes. Each new op carries, in its `_nbits_record` attribute, what the
import record needs to give the original ops back (`records_for`): the reader as it
was, and the constexpr op read from B, scales and zero points
(records.from_initializer undoes the packing, shift and transposition).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from ir import lazy
from ir.construct import const_op
from ir.core import Function, Op, Program, Var
from ir.packing import pack

DOMAIN = "com.microsoft"
BITS = 4
SHIFT = {"int4": 8, "uint4": 0}  # data + SHIFT = MatMulNBits' unsigned code
RECORD_ATTR = "_nbits_record"
INLINE_LIMIT = 64


def rewrite(program: Program, function: str = "main") -> Program:
    """`program` with every eligible MatMul / linear weight read through MatMulNBits;
    the program itself when none is."""
    fn = program.functions[function]
    new_ops = _rewrite_ops(fn)
    if new_ops is None:
        return program
    functions = dict(program.functions)
    functions[function] = fn.replace(block=fn.block.replace(ops=new_ops))
    return Program.make(functions, program.attrs)


# ---- which weights -------------------------------------------------------------------

def _static(var: Var) -> Optional[np.ndarray]:
    return None if var is None else var.val


def _orientation(reader: Op, slot: str) -> Optional[bool]:
    """True when the reader takes the weight as [N, K], False as [K, N], None: not a reader
    MatMulNBits can replace (other inputs than the activation, the weight and a bias must
    be small constants, which the import record carries)."""
    x = reader.inputs.get("x")
    if not isinstance(x, Var) or x.rank is None or x.rank < 2 or x.dtype not in ("fp32", "fp16"):
        return None
    others = [v for k, v in reader.inputs.items() if k not in ("x", slot, "bias")]
    if any(not isinstance(v, Var) or v.val is None or v.val.size > INLINE_LIMIT for v in others):
        return None
    if reader.op_type == "linear" and slot == "weight":
        return True
    if reader.op_type == "matmul" and slot == "y":
        tx, ty = (_static(reader.inputs.get(k)) for k in ("transpose_x", "transpose_y"))
        if tx is not None and bool(tx):
            return None
        return bool(ty) if ty is not None else False
    return None


def _layout(op: Op, rows_first: bool, act_dtype: str) -> Optional[dict]:
    """N, K, block_size and the arrays as MatMulNBits stores them, or None when the
    weight op cannot be said that way."""
    data, scale, offset = op.inputs.get("data"), op.inputs.get("scale"), op.inputs.get("offset")
    d, s = _static(data), _static(scale)
    o = _static(offset) if offset is not None else None
    if d is None or s is None or (offset is not None and (o is None or offset.dtype != data.dtype)):
        return None
    if data.dtype not in SHIFT or d.ndim != 2 or s.ndim != 2:
        return None
    if scale.dtype != act_dtype:
        return None  # scales are of A's type in MatMulNBits
    if not rows_first:  # [K, N] -> [N, K]
        d, s = d.T, s.T
        o = None if o is None else o.T
    n, k = d.shape
    if s.shape[0] != n or s.shape[1] == 0 or k % s.shape[1]:
        return None
    block = k // s.shape[1]
    if block < 16 or block & (block - 1):
        return None
    shift = SHIFT[data.dtype]
    b = _deferred((n, s.shape[1], block * BITS // 8), np.uint8, _packed_rows, _static(data), rows_first, shift)
    s = _deferred(s.shape, s.dtype, _rows, _static(scale), rows_first) if not rows_first else s
    zp = None
    if o is not None or shift == 0:  # no zero point means 8: uint4 without offset needs its zeros
        z = (np.zeros(s.shape, np.int16) if o is None else o.astype(np.int16) + shift)
        zp = np.stack([np.frombuffer(pack(row, "uint4"), np.uint8) for row in z])
    return {"N": n, "K": k, "block_size": block, "B": b, "scales": s, "zero_points": zp}


# ---- the packed arrays, made when the exporter writes them --------------------------------
# B of a model's every weight would be half a byte per weight in memory at once (and the
# int4 codes read to make it would stay resident): instead each one is a computed tensor
# (ir.lazy.computed) made slab by slab of N as the exporter's DataSink writes it, its source
# pages given back after. Small ones are made at once (a stand-in is worth it for big ones).

_SLAB_BYTES = 1 << 20  # source bytes per slab: each step's temporaries stay in cache
_DEFER_MIN_BYTES = 1 << 16


def _deferred(shape, dtype, produce, *args):
    """`produce(*args)`'s array (N rows, slabs along N), as a computed stand-in when big."""
    made = lambda: produce(*args)  # noqa: E731
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize < _DEFER_MIN_BYTES:
        out = np.concatenate(list(made())).reshape(shape)
        out.flags.writeable = False
        return out
    return lazy.computed(shape, dtype, made)


def _slabs(src: np.ndarray, rows_first: bool, owner: np.ndarray):
    """Slabs of src as [rows of N, K], in order along N; the file pages of `owner` (the
    array src views) given back after."""
    n = src.shape[0] if rows_first else src.shape[1]
    k = src.shape[1] if rows_first else src.shape[0]
    step = max(1, _SLAB_BYTES // max(1, k * src.itemsize))
    try:
        for n0 in range(0, n, step):
            yield src[n0:n0 + step] if rows_first else src[:, n0:n0 + step].T
    finally:
        lazy.release(owner)


def _packed_rows(data: np.ndarray, rows_first: bool, shift: int):
    """MatMulNBits' B, [rows of N, K / 2] bytes per slab: the unsigned code (data + shift)
    of each even k in the low nibble, of the next odd k in the high one (LSB first, as
    ir.packing does; block_size * 4 / 8 bytes per block, so the blocks follow each other).
    In uint8 arithmetic: int4's two's complement byte plus 8 wraps to the code plus 8."""
    u = data.view(np.uint8)  # int4 lives in int8 storage, uint4 in uint8: the same bytes
    sh, mask = np.uint8(shift), np.uint8(0x0F)
    for slab in _slabs(u, rows_first, data):
        lo = np.add(slab[:, 0::2], sh)
        lo &= mask
        hi = np.add(slab[:, 1::2], sh)
        hi <<= np.uint8(4)
        lo |= hi
        yield lo


def _rows(values: np.ndarray, rows_first: bool):
    """values as [N, ...] (transposed when stored [.., N]), slab by slab."""
    for slab in _slabs(values, rows_first, values):
        yield np.ascontiguousarray(slab)


def _readers(fn: Function) -> dict:
    found: dict = {}
    for op in fn.ops:
        for slot, v in op.inputs.items():
            for var in v if isinstance(v, tuple) else (v,):
                found.setdefault(var.name, []).append((op, slot))
    return found


def _plan(fn: Function) -> dict:
    """id(weight op) -> (weight op, layout, readers) for every weight that qualifies."""
    readers = _readers(fn)
    outputs = {v.name for v in fn.outputs}
    plans = {}
    for op in fn.ops:
        if op.op_type != "constexpr_blockwise_shift_scale" or op.output.name in outputs:
            continue
        users = readers.get(op.output.name, [])
        sides = {_orientation(r, slot) for r, slot in users}
        if not users or None in sides or len(sides) != 1:
            continue
        acts = {r.inputs["x"].dtype for r, _ in users}
        if len(acts) != 1:
            continue
        layout = _layout(op, sides.pop(), acts.pop())
        if layout is not None:
            plans[id(op)] = (op, layout, users)
    return plans


# ---- the rewrite -------------------------------------------------------------------------

def _rewrite_ops(fn: Function) -> Optional[list]:
    plans = _plan(fn)
    if not plans:
        return None
    taken = {v.name for op in fn.ops for v in op.outputs} | {v.name for v in fn.inputs}
    replaced, consts = {}, {}
    for weight_op, layout, users in plans.values():
        consts[id(weight_op)] = _consts(weight_op, layout, taken)
        record = _weight_record(weight_op, layout)
        for reader, _ in users:
            replaced[id(reader)] = _fused(reader, weight_op.output, consts[id(weight_op)], layout, record)
    out = []
    for op in fn.ops:
        if id(op) in plans:
            out.extend(consts[id(op)].values())  # the packed data where the weight op was
        else:
            out.append(replaced.get(id(op), op))
    return out


def _fresh(base: str, taken: set) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _consts(weight_op: Op, layout: dict, taken: set) -> dict:
    """role -> the const op holding MatMulNBits' B / scales / zero_points."""
    base = weight_op.output.name
    return {role: const_op(_fresh(f"{base}_{role}", taken), layout[role])
            for role in ("B", "scales", "zero_points") if layout[role] is not None}


SLOTS = {"B": "in1", "scales": "in2", "zero_points": "in3"}  # A is in0, bias in5


def _fused(reader: Op, weight: Var, consts: dict, layout: dict, weight_record: dict) -> Op:
    inputs = {"in0": reader.inputs["x"], **{SLOTS[role]: op.output for role, op in consts.items()}}
    bias = reader.inputs.get("bias") if reader.op_type == "linear" else None
    if bias is not None:
        inputs["in5"] = bias
    attrs = {"K": layout["K"], "N": layout["N"], "bits": BITS, "block_size": layout["block_size"],
             "_domain": DOMAIN, "_opset": 1,
             RECORD_ATTR: json.dumps({"reader": _reader_record(reader, weight), "weight": weight_record})}
    return Op.make("onnx.MatMulNBits", reader.name, inputs, reader.outputs, attrs)


def _reader_record(reader: Op, weight: Var) -> dict:
    """The reader as it was: its type, name and, per input, where it lies (records_for
    turns the roles into ONNX names): the activation, the weight, the bias, or a value."""
    slots = {}
    for slot, var in reader.inputs.items():
        if slot == "x" or (slot == "bias" and reader.op_type == "linear"):
            slots[slot] = {"node_input": "bias" if slot == "bias" else "x"}
        elif var.name == weight.name:
            slots[slot] = {"weight": True}
        else:  # a small constant (_orientation made sure)
            slots[slot] = {"value": np.asarray(var.val).tolist(), **_typed(var)}
    return {"op": reader.op_type, "name": reader.name, "inputs": slots}


def _typed(var: Var) -> dict:
    return {"dtype": var.dtype, "shape": [d if isinstance(d, int) else str(d) for d in var.shape]}


def _weight_record(op: Op, layout: dict) -> dict:
    data, scale, offset = op.inputs["data"], op.inputs["scale"], op.inputs.get("offset")
    rows_first = tuple(data.shape) == (layout["N"], layout["K"]) and tuple(scale.shape)[0] == layout["N"]
    perm = None if rows_first else [1, 0]
    n, k, block = layout["N"], layout["K"], layout["block_size"]
    shift = SHIFT[data.dtype]
    inputs = {"data": {"role": "B", "layout": {"stored": [n, k], "shift": shift, "perm": perm}, **_typed(data)},
              "scale": {"role": "scales", "layout": {"stored": [n, k // block], "perm": perm}, **_typed(scale)}}
    if offset is not None:
        inputs["offset"] = {"role": "zero_points", "layout": {"stored": [n, k // block], "shift": shift,
                                                              "perm": perm, "rows": True}, **_typed(offset)}
    return {"op": op.op_type, "name": op.name, "output": op.output.name, "inputs": inputs}


def fused_outputs(fn: Function, env: dict) -> list:
    """(ONNX name, Var) of each MatMulNBits output this module wrote."""
    return [(env[op.output.name], op.output) for op in fn.ops
            if op.op_type == "onnx.MatMulNBits" and RECORD_ATTR in op.attrs and op.output.name in env]


# ---- import records -----------------------------------------------------------------------

def records_for(fn: Function, env: dict, nodes: list, first_index: int) -> list:
    """Import records (records.RECORD_KEY) of the MatMulNBits ops of `fn` once written:
    `env` maps IR var names to ONNX names, `nodes` are the graph's nodes. Per weight one
    record of its constexpr op, read from the packed initializers (no decode nodes of its
    own), and per reader one record of the reader, decoding the MatMulNBits node."""
    producer = {o: nd for nd in nodes for o in nd.output}
    records, weight_index = [], {}
    for op in fn.ops:
        raw = op.attrs.get(RECORD_ATTR) if op.op_type == "onnx.MatMulNBits" else None
        node = producer.get(env.get(op.output.name)) if raw else None
        if node is None:
            continue
        info = json.loads(raw)
        names = dict(zip(("x", "B", "scales", "zero_points", "g_idx", "bias"), list(node.input) + [""] * 6))
        weight = info["weight"]
        if weight["name"] not in weight_index:
            weight_index[weight["name"]] = first_index + len(records)
            records.append({"op": weight["op"], "name": weight["name"], "nodes": [], "outputs": [weight["output"]],
                            "inputs": {slot: {"init": names[src["role"]], "nbits": BITS if src["role"] != "scales"
                                              else 0, **{k: v for k, v in src.items() if k != "role"}}
                                       for slot, src in weight["inputs"].items()}})
        reader = info["reader"]
        inputs = {}
        for slot, src in reader["inputs"].items():
            if "node_input" in src:
                inputs[slot] = {"onnx": names[src["node_input"]]}
            elif "weight" in src:
                inputs[slot] = {"op": weight_index[weight["name"]], "output": 0}
            else:
                inputs[slot] = src
        records.append({"op": reader["op"], "name": reader["name"], "nodes": [node.name],
                        "outputs": [node.output[0]], "inputs": inputs})
    return records
