import numpy as np
import pytest

from sramsim import BerCurve
from sramsim.memory.curves import FINFET14


def test_finfet14_hits_table_points():
    c = BerCurve.builtin("finfet14")
    v, b = FINFET14
    assert np.allclose(c.ber(np.array(v)), b, rtol=1e-12, atol=0)
    assert np.allclose(c.voltage(np.array(b[1:])), v[1:], rtol=1e-12)


def test_log_linear_interpolation_between_points():
    c = BerCurve.builtin("finfet14")
    mid = (0.875 + 0.833) / 2
    expected = 10 ** ((np.log10(1.29e-3) + np.log10(1.115e-2)) / 2)
    assert c.ber(mid) == pytest.approx(expected, rel=1e-12)


def test_zero_segment_is_linear_in_ber():
    c = BerCurve.builtin("finfet14")
    assert c.ber(1.0) == 0.0
    assert c.ber(1.2) == 0.0                       # above nominal: no errors
    assert c.ber((1.0 + 0.958) / 2) == pytest.approx(1.907e-6 / 2)
    assert c.voltage(0.0) == 1.0


def test_inverse_round_trip_vectorised():
    c = BerCurve.builtin("finfet14")
    v = np.linspace(0.75, 1.0, 101)
    assert np.allclose(c.voltage(c.ber(v)), v, atol=1e-12)
    b = np.logspace(-7, np.log10(0.2), 57)
    assert np.allclose(c.ber(c.voltage(b)), b, rtol=1e-9)


def test_one_percent_voltage():
    assert BerCurve.builtin("finfet14").voltage(0.01) == pytest.approx(0.835, abs=1e-3)


def test_gaussian_curve():
    g = BerCurve.gaussian(0.706, 0.055)
    assert g.ber(0.706) == pytest.approx(0.5)
    # the fit given in the design: close to finfet14 around 1% BER
    assert g.ber(0.833) == pytest.approx(1.115e-2, rel=0.1)
    v = np.array([0.6, 0.7, 0.8, 0.9])
    assert np.allclose(g.voltage(g.ber(v)), v)
    with pytest.raises(ValueError):
        BerCurve.gaussian(0.7, 0.0)


@pytest.mark.parametrize("v,b,msg", [
    ([1.0, 0.9, 0.8], [0.0, 0.1, 0.01], "monotone"),
    ([1.0, 0.9], [0.0], "pairs"),
    ([1.0, np.nan], [0.0, 0.1], "NaN"),
    ([1.0, 0.9], [0.0, 1.5], r"\[0, 1\]"),
    ([1.0, 1.0], [0.0, 0.1], "repeated"),
])
def test_from_table_validation(v, b, msg):
    with pytest.raises(ValueError, match=msg):
        BerCurve.from_table(v, b)


def test_out_of_range_is_an_error():
    c = BerCurve.builtin("finfet14")
    with pytest.raises(ValueError, match="below the lowest"):
        c.ber(0.7)
    with pytest.raises(ValueError, match="highest"):
        c.voltage(0.5)
    with pytest.raises(ValueError):
        BerCurve.builtin("nope")
