"""verify="each" runs a model at symbolic-dim sizes it accepts: when the small drawn sizes all
fail (a reshape that needs 16 elements), the sizes are probed from the graph as verify() does,
instead of reporting that nothing could be checked."""
import numpy as np

from ir.builder import TensorSpec, program
from pipeline import Pipeline
from pipeline.contracts import runnable_dims


def _needs_sixteen():
    w = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)

    @program(inputs={"x": TensorSpec(("n",), "fp32")})
    def net(b, x):
        h = b.reshape(x=x, shape=np.array([1, 16], np.int32), name="r")
        return b.linear(x=h, weight=b.const(w, name="w"), name="y")
    return net


def test_sizes_are_probed_when_every_drawn_input_fails():
    assert runnable_dims(_needs_sixteen(), samples=4, seed=0) == {"n": 16}


def test_given_sizes_are_kept():
    assert runnable_dims(_needs_sixteen(), samples=4, seed=0, dims={"n": 16}) == {"n": 16}


def test_int8_checks_its_outputs_at_the_probed_size():
    trace = Pipeline.preset("int8").run(_needs_sixteen(), verify="each")
    assert trace.steps[0].changed
    report = trace.steps[0].verification
    assert report.passed and report.samples > 0, report.summary()
