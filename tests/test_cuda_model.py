"""benchmarks/cuda_model.py: the CUDA backend's speed model (docs/cuda.md, "Model") adds up as
derived there and meets the issue's target at its headline shape."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import cuda_model as cm  # noqa: E402


def test_bytes_per_logit_as_derived():
    # fp32 S written and read in each direction (16 B), bf16 H written once and read by two
    # products (6 B), two fp32 column states per 128 rows written and read (0.125 B)
    assert cm.bytes_per_logit("softmax", "bf16")["total"] == pytest.approx(22.125)
    assert cm.bytes_per_logit("softmax", "fp32")["total"] == pytest.approx(28.125)  # fp32 H
    assert cm.bytes_per_logit("sigmoid", "bf16")["total"] == pytest.approx(14.0)
    assert cm.bytes_per_logit("sigmoid", "bf16", grads=False)["total"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="loss"):
        cm.bytes_per_logit("hinge")


def test_headline_figures():
    """N = 32768, d = 768, bf16 at 70% of the dense bf16 peak: >= 55% of the torch.mm rate on an
    H100 (the issue's target), more on an H200's faster memory, more at larger d."""
    h100, h200 = cm.DEVICES["H100"], cm.DEVICES["H200"]
    rate = cm.MM_FRACTION * h100["bf16_peak"]
    m100 = cm.model(32768, 768, rate, h100["hbm"])
    m200 = cm.model(32768, 768, rate, h200["hbm"])
    assert m100["fraction_of_mm"] >= 0.55
    assert m200["fraction_of_mm"] > m100["fraction_of_mm"]
    assert cm.model(32768, 1024, rate, h100["hbm"])["fraction_of_mm"] > m100["fraction_of_mm"]
    assert m100["t_total"] == pytest.approx(m100["t_products"] + m100["t_bytes"])
    assert m100["t_products"] == pytest.approx(4 * 2 * 32768**2 * 768 / rate)


def test_model_line_names_both():
    line = cm.model_line(0.02, 32768, 768, 692e12, 3.35e12)
    assert "model" in line and "measured 20.00 ms" in line and "57%" in line
