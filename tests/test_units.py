"""Human units are converted once, at the boundary, to bytes, bytes/s, FLOP/s and seconds."""

import pytest

from planner.core.units import parse_quantity


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("80GiB", "bytes", 80 * 2**30),
        ("80GB", "bytes", 80e9),
        ("900GB/s", "bandwidth", 900e9),
        ("400Gbps", "bandwidth", 50e9),
        ("989TFLOPS", "flops", 989e12),
        ("10us", "time", 10e-6),
        ("2.5 ms", "time", 2.5e-3),
        (1234, "bytes", 1234.0),
    ],
)
def test_units_convert_to_base_units(text, kind, expected):
    assert parse_quantity(text, kind) == pytest.approx(expected)


def test_unknown_unit_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown bytes unit 'GiBs'.*accepted"):
        parse_quantity("80GiBs", "bytes")


def test_negative_quantity_is_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        parse_quantity("-1GB", "bytes")
