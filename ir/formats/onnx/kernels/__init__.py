"""numpy kernels for foreign ONNX ops: one table, op type -> kernel.

The interpreter runs an ONNX node the importer did not map to the core op set
(a foreign ``onnx.<OpType>`` op) with the kernel this table names for it;
onnx's ReferenceEvaluator is only the fallback for op types without one (and
for the rare attribute combinations a kernel declines, see ``Unsupported``).
The reference evaluator is slow (it builds a model per node) and wrong on
cases real exports hit, so kernels are checked against onnxruntime, which is
the arbiter where the two disagree (tests/formats/test_onnx_kernels*.py).

The contract of a kernel::

    kernel(ins: list, attrs: dict, node: Node) -> list

- ``ins``: the node's inputs by position, ``None`` for an empty (or absent
  trailing) slot. Runtime values are ONNX's: a tensor is a numpy array
  (int4 / uint4 as ml_dtypes arrays, strings as object arrays), a sequence a
  Python list of arrays, an optional ``None`` (empty) or its value, a map a
  dict. Inputs are never written to.
- ``attrs``: the node's ONNX attributes as plain values (ints, floats, str,
  tuples, read-only arrays for tensors; graphs stay serialized bytes). The
  IR's own keys (``_opset``, ``_domain``) are not in it. Defaults are the
  kernel's business: absent attributes are absent.
- ``node``: ``Node(op_type, opset, n_out)``: the opset of the op's domain the
  model imported (opset-dependent behaviour is looked up here, never guessed
  from the inputs) and how many outputs the node declares.
- Returns a list of output values, at least ``node.n_out`` long (a kernel may
  compute more, e.g. LayerNormalization's Mean and InvStdDev; the extra ones
  are dropped). Tensors come back with the dtype ONNX gives the output.
- Bad input raises ValueError (or IndexError / TypeError) with a message that
  names the problem; the interpreter adds the op's name. ``Unsupported``
  means "a case this kernel does not implement": the caller then uses the
  reference evaluator.

Families live in their own modules (elementwise, activation, reduce,
indexing, shape, norm, linalg, conv, resize, rnn, quant, sequence, loss,
transformer, detection, signal, and ml for ai.onnx.ml), each with a
``KERNELS`` dict; this module merges them. Control flow (If, Loop, Scan) is
not here: it needs the IR's nested blocks.
"""
from __future__ import annotations

from ir.formats.onnx.kernels._util import Node, Unsupported
from ir.formats.onnx.kernels import (activation, conv, detection, elementwise, indexing, linalg, loss, ml,
                                     norm, quant, reduce, resize, rnn, sequence, shape, signal, transformer)

_FAMILIES = (elementwise, activation, reduce, indexing, shape, norm, linalg, conv, resize, rnn, quant,
             sequence, loss, transformer, detection, signal, ml)


def _merge(families) -> dict:
    table: dict = {}
    for fam in families:
        for key, fn in fam.KERNELS.items():
            if key in table:
                raise RuntimeError(f"ONNX kernel {key!r} is defined twice ({fam.__name__})")
            table[key] = fn
    return table


# op type (default domain) or "domain:OpType" -> kernel
TABLE: dict = _merge(_FAMILIES)


def kernel_for(op_type: str, domain: str = ""):
    """The kernel of an ONNX op type, or None (then the reference evaluator runs it)."""
    if domain in ("", "ai.onnx"):
        return TABLE.get(op_type)
    return TABLE.get(f"{domain}:{op_type}")


__all__ = ["TABLE", "Node", "Unsupported", "kernel_for"]
