"""Stepsize and momentum schedules against the released runs' values."""

import pytest

from efmom.schedules import MomentumSchedule, StepsizeSchedule


def test_momentum_decay_per_epoch():
    schedule = MomentumSchedule(1.0, 0.57)
    values = [schedule(epoch, step=1000) for epoch in range(3)]
    assert values == pytest.approx([1.0, 0.7936481026567311, 0.6736167884328451], abs=1e-15)


def test_momentum_decay_per_step():
    schedule = MomentumSchedule(0.5, 1.0, unit="step")
    assert schedule(epoch=0, step=2) == pytest.approx(0.25)


def test_stepsize_decay_and_constant():
    assert StepsizeSchedule(0.1, 0.5)(3, 0) == pytest.approx(0.05)
    assert StepsizeSchedule(0.1, 0.5, unit="step")(0, 3) == pytest.approx(0.05)
    assert StepsizeSchedule(0.1)(50, 5000) == 0.1
    assert MomentumSchedule(0.3)(50, 5000) == 0.3


@pytest.mark.parametrize("value", [-1.0, 0.0, float("inf"), "0.1", None])
def test_stepsize_rejects(value):
    with pytest.raises(ValueError, match="method.lr"):
        StepsizeSchedule(value)


@pytest.mark.parametrize("value", [1.01, 0.0, -0.5])
def test_momentum_rejects(value):
    with pytest.raises(ValueError, match=r"method.eta must be in \(0, 1\]"):
        MomentumSchedule(value)
