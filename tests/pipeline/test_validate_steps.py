"""ir.validate runs between steps: on by default, skipped when a stage returned its
input, timed apart from the stage, and an invalid output fails naming step and rule."""
from __future__ import annotations

import pytest

from ir import Var
from pipeline import Pipeline
from pipeline.errors import InvalidStepOutput
from stages.base import Stage
from tests.pipeline import pipeline_helpers as h


def _dangling_output(prog, *, context=None):
    """Returns a program whose main output is a value no op defines (an IR rule broken)."""
    main = prog.main
    ghost = Var("ghost", main.outputs[0].type)
    return prog.with_function(main.replace(block=main.block.replace(outputs=(ghost,))))


BROKEN = Stage("test_dangling_output", _dangling_output, "1")


def test_a_stage_returning_an_invalid_program_fails_naming_the_step_and_the_rule():
    with pytest.raises(InvalidStepOutput, match=r"step 1 \(test_dangling_output\) returned an invalid "
                                                r"program: function 'main': .*ghost") as info:
        Pipeline([h.identity, BROKEN]).run(h.mlp())
    assert info.value.step == 1 and info.value.stage is BROKEN


def test_validation_can_be_turned_off():
    trace = Pipeline([BROKEN]).run(h.mlp(), validate=False)
    assert trace.steps[0].changed and trace.steps[0].validate_seconds == 0.0


def test_validation_is_timed_for_new_programs_and_skipped_for_unchanged_ones():
    trace = Pipeline([h.identity, h.scale_const(name="w0")]).run(h.mlp())
    same, changed = trace.steps
    assert not same.changed and same.validate_seconds == 0.0
    assert changed.changed and changed.validate_seconds > 0.0
    assert trace.steps[1].to_json()["validate_seconds"] == changed.validate_seconds


def test_replay_validates_too_unless_told_not_to():
    trace = Pipeline([h.identity, h.identity]).run(h.mlp())
    with pytest.raises(InvalidStepOutput, match="step 1"):
        trace.replay(from_step=1, stages=[BROKEN])
    assert trace.replay(from_step=1, stages=[BROKEN], validate=False).steps[1].changed


def test_full_validation_also_checks_what_a_stage_took_over():
    """The default trusts ops a stage left as they were; "full" checks them too."""
    import numpy as np

    from ir.core import Op
    from ir.validate import validate

    def _writeable_weight(prog, *, context=None):
        # an input defect (a writeable const) that no stage touches...
        main = prog.main
        ops = list(main.ops)
        i = next(k for k, op in enumerate(ops) if op.op_type == "const" and op.name == "w0")
        arr = np.array(ops[i].attrs["val"])  # a writeable copy
        ops[i] = Op.make("const", "w0", outputs=ops[i].outputs, attrs={**ops[i].attrs, "val": arr})
        return prog.with_function(main.replace(block=main.block.replace(ops=ops)))

    flawed = _writeable_weight(h.mlp())
    with pytest.raises(Exception, match="writeable"):
        validate(flawed)
    tail = Pipeline([h.scale_const(name="w1")])
    assert tail.run(flawed).steps[0].changed  # ...is not reported by the default
    with pytest.raises(InvalidStepOutput, match="writeable array"):
        tail.run(flawed, validate="full")


def test_a_bad_validate_option_is_refused():
    with pytest.raises(Exception, match="validate='yes'"):
        Pipeline([h.identity]).run(h.mlp(), validate="yes")


def test_an_invalid_output_leaves_a_crash_reproducer(tmp_path):
    from pipeline import CrashReproducer

    repro = CrashReproducer(tmp_path)
    with pytest.raises(InvalidStepOutput, match="reproducer saved to"):
        Pipeline([h.identity, BROKEN]).run(h.mlp(), instruments=[repro])
    assert repro.last is not None
