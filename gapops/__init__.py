"""gapops: fused, memory-lean CLIP (softmax) and SigLIP (sigmoid) losses, and modality-gap
studies."""
from . import metrics
from ._dispatch import backends
from ._version import __version__
from .loss import contrastive_loss, sigmoid_loss
from .module import ContrastiveLoss, SigmoidLoss

__all__ = ["contrastive_loss", "ContrastiveLoss", "sigmoid_loss", "SigmoidLoss", "backends", "build_info", "metrics", "__version__"]


def build_info() -> dict:
    """What the compiled extension was built with (CPU, CUDA, CUDA archs), or why it is missing."""
    from ._extension import build_info as _build_info
    return _build_info()
