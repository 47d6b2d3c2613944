"""The five-minute tour of weightpress, as a script you can run:

    python examples/tour.py

Build a program, compose a pipeline in code, run it on a disk cache, look at
the trace, diff two steps, replay with a changed parameter, verify.
"""
import tempfile

import numpy as np

from ir.builder import TensorSpec, program
from ir.interpret import evaluate
from ir.text import print_program
from pipeline import DiskCache, Pipeline, verify
from stages.cleanup import dead_code_elimination
from stages.compression import affine_quantize_weights, palettize_weights, sparsify_weights

rng = np.random.default_rng(0)
W1 = rng.standard_normal((256, 64)).astype(np.float32) * 0.1
W2 = rng.standard_normal((10, 256)).astype(np.float32) * 0.1


@program(inputs={"x": TensorSpec((1, 64), "fp32")})
def mlp(b, x):
    h = b.relu(x=b.linear(x=x, weight=b.const(W1, name="fc1_w")))
    return b.linear(x=h, weight=b.const(W2, name="fc2_w"), name="logits")


# 1. Compose: stages are curried functions; a pipeline is data with a textual spec.
pipe = Pipeline([sparsify_weights(mode="percentile_based", target_percentile=0.5),
                 palettize_weights(nbits=4, op_selector=lambda w: w.size > 1024)])
pipe = pipe.then(dead_code_elimination)
print("spec:", pipe.spec())

with tempfile.TemporaryDirectory() as tmp:
    cache = DiskCache(tmp)
    # 2. Run: a Trace with one step per stage (digests, time, changed?, cached?, stats).
    trace = pipe.run(mlp, cache=cache)
    print(trace.summary())
    # a second run is all cache hits
    again = pipe.run(mlp, cache=cache)
    print("cached steps on re-run:", [s.cached for s in again.steps])

    # 3. Diff: what did palettization change?
    print(trace.diff(1, 2))

    # 4. Replay from step 1 with another parameter; step 0 comes from the cache.
    replayed = trace.replay(from_step=1, stages={1: palettize_weights(nbits=6)})
    print("replay re-executed steps:", replayed.executed)

# 5. Quantize instead, look at the program text, and verify: property-based
#    equivalence through the interpreter, within a signal-to-noise bound.
int8 = affine_quantize_weights(mlp, dtype="int8", op_selector=lambda w: True)
print(print_program(int8))
print("int8:", verify(mlp, int8, samples=16, snr_db=30).summary())
print("sparse+4bit:", verify(mlp, trace.result, samples=16, snr_db=30).summary())
x = rng.standard_normal((1, 64)).astype(np.float32)
print("max |fp32 - int8| logits:",
      float(np.abs(evaluate(mlp, {"x": x})["logits"] - evaluate(int8, {"x": x})["logits"]).max()))
