"""``corral.sizeof``: cheap estimates that stay close to what values really occupy."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from corral.sizeof import sizeof


def close(estimate: int, truth: int, within: float = 0.1) -> bool:
    return abs(estimate - truth) <= within * truth


def test_buffers_are_exact():
    assert sizeof(np.zeros(1000)) == 8000
    assert sizeof(memoryview(bytes(100))) == 100
    assert sizeof(b"x" * 1000) == sys.getsizeof(b"x" * 1000)


@pytest.mark.parametrize("dtype", [object, "string"])
def test_a_dataframe_counts_its_strings_not_only_their_pointers(dtype):
    frame = pd.DataFrame({"s": [f"{i:0100d}" for i in range(2000)],
                          "x": np.arange(2000.0)}).astype({"s": dtype})
    truth = frame.memory_usage(deep=True).sum()
    assert close(sizeof(frame), truth)
    assert sizeof(frame) > 2000 * 100  # the strings themselves


def test_object_arrays_and_series_count_what_they_point_to():
    strings = [f"{i:050d}" for i in range(1000)]
    array = np.array(strings, dtype=object)
    truth = array.nbytes + sum(map(sys.getsizeof, strings))
    assert close(sizeof(array), truth)
    series = pd.Series(strings, dtype=object)
    assert close(sizeof(series), series.memory_usage(deep=True, index=False))


def test_containers_are_sampled_and_nesting_is_bounded():
    assert close(sizeof([np.zeros(100)] * 1000), 1000 * 800, within=0.02)
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert sizeof(nested) > 0  # deeper than the bound: not a RecursionError
