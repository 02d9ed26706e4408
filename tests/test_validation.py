import numpy as np
import pytest

from jaxens import _validation


@pytest.mark.parametrize("value, minimum, maximum", [
    (0, None, None), (np.int64(3), 1, 3), (-5, None, -5), (2**40, 0, None)])
def test_check_int_accepts(value, minimum, maximum):
  _validation.check_int("n", value, minimum, maximum)


@pytest.mark.parametrize("value, minimum, maximum, expected", [
    (True, None, None, "an integer, got True"),
    (2.0, None, None, "an integer, got 2.0"),
    (0, 1, None, "an integer >= 1, got 0"),
    (4, 1, 3, r"an integer in \[1, 3\], got 4"),
    (np.int32(1), None, 0, r"an integer <= 0, got np.int32\(1\)"),
])
def test_check_int_names_the_argument_and_the_range(value, minimum, maximum, expected):
  with pytest.raises(ValueError, match=f"^steps: expected {expected}"):
    _validation.check_int("steps", value, minimum, maximum)
