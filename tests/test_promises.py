"""Promises from a hostile audit (issue 21, item 11), library side: inputs that were wrongly
accepted, or refused with an unclear exception, are refused with a one-line InputError that
says what is wrong."""
import math

import numpy as np
import pytest
import torch

from sramsim import BerCurve, Chip, DramGeometry, Geometry, QuantizedModel, RandomBitErrors
from sramsim.errors import InputError
from sramsim.memory.chip import VoltageError

CURVE = BerCurve.builtin("finfet14")


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def chip():
    return Chip.random(Geometry(64, 64), CURVE, 0.75, seed=1)


@pytest.fixture(scope="module")
def qm():
    torch.manual_seed(0)
    return QuantizedModel(torch.nn.Sequential(torch.nn.Linear(16, 8)))


# --- voltage above nominal ----------------------------------------------------------------------
def test_voltage_above_nominal_is_refused_everywhere(chip, qm):
    for call in (lambda: chip.ber(1.5), lambda: chip.faults(1.5), lambda: chip.count(1.01),
                 lambda: qm.perturbed(chip, voltage=1.5), lambda: qm.faulty_image(chip, 1.5)):
        with pytest.raises(VoltageError, match="above") as err:
            call()
        assert "nominal" in one_line(err)
    assert chip.ber(1.0) == chip.count(1.0) / chip.geometry.capacity_bits   # nominal itself: fine


def test_voltage_given_with_a_source_that_has_none_is_refused(qm):
    source = RandomBitErrors(0.01, seed=0)
    with pytest.raises(InputError, match="voltage") as err:
        qm.perturbed(source, voltage=0.8)
    one_line(err)
    with pytest.raises(InputError, match="voltage"):
        qm.faulty_image(source, voltage=0.8)
    assert qm.perturbed(source)                           # without a voltage: runs


# --- geometry capacity --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Geometry(2 ** 62, 2 ** 62, 4),
                                  lambda: Geometry(2 ** 64, 1),
                                  lambda: DramGeometry(banks=2 ** 40, rows=2 ** 40)],
                         ids=["2^62x2^62x4", "2^64x1", "dram 2^40 banks x 2^40 rows"])
def test_geometries_beyond_the_capacity_bound_are_refused(make):
    with pytest.raises(InputError, match="capacity") as err:
        make()
    assert "2^" in one_line(err)


def test_largest_geometry_within_the_bound_is_accepted():
    from sramsim.memory.geometry import MAX_CAPACITY_BITS
    assert Geometry(MAX_CAPACITY_BITS // 8, 8).capacity_bits == MAX_CAPACITY_BITS


def test_none_geometry_or_curve_is_an_input_error():
    for call in (lambda: Chip.random(None, CURVE, 0.8, 0),
                 lambda: Chip.random(Geometry(8, 8), None, 0.8, 0),
                 lambda: Chip.random(Geometry(8, 8), "finfet14", 0.8, 0)):
        with pytest.raises(InputError) as err:
            call()
        assert "must be a" in one_line(err)


# --- curves ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mu,sigma", [(math.nan, 1), (0.7, math.nan), (math.inf, 0.1),
                                      (0.7, math.inf)])
def test_gaussian_curve_needs_finite_parameters(mu, sigma):
    with pytest.raises(InputError) as err:
        BerCurve.gaussian(mu, sigma)
    one_line(err)


def test_table_voltages_must_be_positive():
    with pytest.raises(InputError, match="positive") as err:
        BerCurve.from_table([1, -1], [0.0, 0.1])
    one_line(err)
    with pytest.raises(InputError, match="positive"):
        BerCurve.from_table([1, 0], [0.0, 0.1])


def test_ber_of_nan_says_so():
    for curve in (CURVE, BerCurve.gaussian(0.7, 0.05)):
        with pytest.raises(InputError) as err:
            curve.ber(math.nan)
        message = one_line(err)
        assert "NaN" in message and "below" not in message
    with pytest.raises(InputError, match="NaN"):
        CURVE.ber(np.array([0.9, math.nan]))


# --- devices -----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_input_error(qm, cnn_checkpoint):
    from sramsim.nn.models import load_checkpoint
    path, _ = cnn_checkpoint
    source = RandomBitErrors(0.01, seed=0)
    for call in (lambda: qm.perturbed(source, device="cuda"),
                 lambda: qm.clean_weights(device="cuda"),
                 lambda: load_checkpoint(path, device="cuda"),
                 lambda: qm.perturbed(source, device="nosuchdevice")):
        with pytest.raises(InputError, match="device") as err:
            call()
        one_line(err)
