"""ir.fixpoint: the one fixed-point loop (rounds counted, non-convergence warned)."""
import warnings

import pytest

from ir.fixpoint import FixedPoint, FixedPointNotReached, fixed_point


def test_rounds_count_every_step_including_the_settling_one():
    # 8 -> 4 -> 2 -> 1 -> 0 -> 0: five steps, the fifth returns what it was given
    done = fixed_point(lambda x: x // 2, 8, 10, settled=lambda old, new: old == new)
    assert done == FixedPoint(0, 5, True)


def test_default_settles_on_the_same_object():
    box = ["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fixed_point(lambda b: b, box, 3) == FixedPoint(box, 1, True)
    # equal but new objects never settle by identity
    with pytest.warns(FixedPointNotReached):
        done = fixed_point(lambda b: list(b), box, 3)
    assert done.rounds == 3 and not done.converged and done.result == box


def test_giving_up_warns_and_says_so():
    with pytest.warns(FixedPointNotReached, match=r"counter: no fixed point after 3 rounds"):
        done = fixed_point(lambda x: x + 1, 0, 3, what="counter", settled=lambda a, b: a == b)
    assert done == FixedPoint(3, 3, False)
    assert issubclass(FixedPointNotReached, RuntimeWarning)


def test_no_warning_when_asked_not_to():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = fixed_point(lambda x: x + 1, 0, 2, settled=lambda a, b: a == b, warn=False)
    assert done == FixedPoint(2, 2, False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_bad_round_limits_are_refused(bad):
    with pytest.raises(ValueError, match="max_rounds must be a positive int"):
        fixed_point(lambda x: x, 0, bad, what="loop")
