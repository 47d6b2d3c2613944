"""weightpress IR: an immutable program representation, its op table,
builder, interpreter, text form, digest, validation and native format."""
from ir.core import Block, Function, InvalidProgram, Op, Program, TensorType, Var
from ir.ops import OpError

__version__ = "0.1.0"
__all__ = ["Block", "Function", "InvalidProgram", "Op", "OpError", "Program", "TensorType", "Var"]
