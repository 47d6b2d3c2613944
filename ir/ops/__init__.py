"""The op table. Importing this package registers every core op."""
from ir.ops import control, elementwise, layout, nn, quant  # noqa: F401  (registration)
from ir.ops.registry import (BLOCK_KERNELS, FOREIGN, PROVIDERS, REGISTRY, Context, DuplicateRegistration, In,
                             OpError, OpSchema, block_kernel, foreign_handler, is_foreign, register, register_block_kernel,
                             register_foreign, schema)

__all__ = ["REGISTRY", "FOREIGN", "PROVIDERS", "BLOCK_KERNELS", "block_kernel", "DuplicateRegistration", "register_block_kernel", "Context", "In", "OpError", "OpSchema", "foreign_handler",
           "is_foreign", "register", "register_foreign", "schema"]
