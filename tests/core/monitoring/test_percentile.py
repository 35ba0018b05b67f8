import math

from core.monitoring.percentile import percentile


def test_nearest_rank_returns_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.01) == 1.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.25, 0.75], 0.6) in (0.25, 0.75)


def test_no_values_give_nan() -> None:
    assert math.isnan(percentile([], 0.5))
