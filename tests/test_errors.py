"""The shared range checks of sramsim.errors: values, bounds and the one-line messages."""
import math

import pytest

from sramsim.errors import InputError, check_ber, check_number


@pytest.mark.parametrize("value, kw, expect", [
    ("1.5", {}, 1.5), (0, {"low": 0.0}, 0.0), (1, {"low": 0.0, "high": 1.0}, 1.0),
    (2e-3, {"positive": True}, 2e-3),
])
def test_accepts(value, kw, expect):
    assert check_number(value, "x", **kw) == expect


@pytest.mark.parametrize("value, kw, message", [
    (0.0, {"positive": True}, "x must be a positive number, got 0.0"),
    (-1, {"low": 0.0}, "x must be a finite number >= 0, got -1"),
    (float("nan"), {}, "x must be a finite number, got nan"),
    (math.inf, {"low": 1.0}, "x must be a finite number >= 1, got inf"),
    (1.5, {"low": 0.0, "high": 1.0}, "x must be a finite number in [0, 1], got 1.5"),
    ("abc", {}, "x must be a finite number, got 'abc'"),
    (True, {}, "x must be a finite number, got True"),
    (None, {"positive": True}, "x must be a positive number, got None"),
])
def test_refuses_with_one_line_naming_the_value(value, kw, message):
    with pytest.raises(InputError) as e:
        check_number(value, "x", **kw)
    assert str(e.value) == message


def test_check_ber_bounds():
    assert check_ber(1.0) == 1.0
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        check_ber(1.0, "p", allow_one=False)
