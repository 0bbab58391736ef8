"""gapops.ContrastiveLoss against open_clip's own ClipLoss, on a real (tiny) open_clip.CLIP.

open_clip's trainer calls ``loss(**model_out, output_dict=True)``; with ``init_logit_bias`` the
model returns a ``logit_bias`` too. Both losses must agree to fp32 rounding, and so must the
gradients of every model parameter, the bias included (0 for the softmax loss).
"""
import pytest
import torch

import gapops

open_clip = pytest.importorskip("open_clip")
from open_clip.loss import ClipLoss  # noqa: E402
from helpers import model_loss_and_grads as loss_and_grads  # noqa: E402
from helpers import open_clip_batch as batch  # noqa: E402
from helpers import tiny_open_clip as tiny_clip  # noqa: E402
from helpers import train_steps  # noqa: E402


@pytest.mark.parametrize("logit_bias", [None, -10.0])
def test_trainer_call_matches_clip_loss(logit_bias):
    model = tiny_clip(0, logit_bias)
    images, texts = batch(1)
    want_loss, want = loss_and_grads(model, ClipLoss(), images, texts)
    got_loss, got = loss_and_grads(model, gapops.ContrastiveLoss(), images, texts)
    assert abs(got_loss - want_loss) <= 1e-6 * max(1.0, abs(want_loss))
    assert set(got) == set(want), "every parameter ClipLoss trains must get a gradient"
    for name, w in want.items():
        if name == "logit_bias":  # exactly 0; ClipLoss's is fp32 rounding of softmax - one-hot
            assert float(w.abs().max()) < 1e-5 and float(got[name].abs().max()) == 0.0
            continue
        err = float((got[name] - w).norm()) / max(float(w.norm()), 1e-12)
        assert err < 1e-4, f"{name}: relative gradient error {err:.2e}"


def test_training_steps_follow_clip_loss():
    """Ten SGD steps with each loss stay as close as fp32 rounding lets two exact losses stay."""
    batches = [batch(100 + step) for step in range(10)]
    finals = [train_steps(tiny_clip(3, -10.0), crit, batches, lr=0.05)
              for crit in (ClipLoss(), gapops.ContrastiveLoss())]
    (l_ref, (*_, p_ref)), (l_got, (*_, p_got)) = finals
    assert max(abs(a - b) for a, b in zip(l_ref, l_got)) < 1e-4
    assert float((p_ref - p_got).norm() / p_ref.norm()) < 1e-4


def test_clip_loss_constructor_arguments_are_taken():
    crit = gapops.ContrastiveLoss(False, False, True, 0, 1, False)  # ClipLoss's positional order
    assert not crit.distributed
    with pytest.raises(ValueError, match="use_horovod"):
        gapops.ContrastiveLoss(use_horovod=True)
    with pytest.raises(ValueError, match="local_loss=True needs gather_with_grad=True"):
        gapops.ContrastiveLoss(local_loss=True, world_size=2, rank=0)
    with pytest.raises(RuntimeError, match="initialized process group"):
        gapops.ContrastiveLoss(world_size=2, rank=1)(torch.randn(3, 4), torch.randn(3, 4), 10.0)
