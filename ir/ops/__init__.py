"""The op table. Importing this package registers every core op."""
from ir.ops import control, elementwise, layout, nn, quant  # noqa: F401  (registration)
from ir.ops.registry import (BLOCK_KERNELS, FOREIGN, REGISTRY, Context, In, OpError, OpSchema,
                             foreign_handler, is_foreign, register, register_block_kernel,
                             register_foreign, schema)

__all__ = ["REGISTRY", "FOREIGN", "BLOCK_KERNELS", "register_block_kernel", "Context", "In", "OpError", "OpSchema", "foreign_handler",
           "is_foreign", "register", "register_foreign", "schema"]
