"""Liang et al.'s embedding-shift experiment (arXiv 2203.02053, section 4.2) on any embeddings.

Move both modalities along the gap vector Δ, x̂' = normalize(x̂ − λΔ/2), ŷ' = normalize(ŷ + λΔ/2)
(λ = 0: the embeddings as they are; λ = 1: the centroids matched), and evaluate the contrastive
loss at temperature τ, averaged over batches of pairs. On pretrained CLIP the loss is lowest at
λ = 0 at CLIP's τ = 1/100: the gap is a local optimum that the loss defends.

    >>> from gapops.metrics.shift import shift_landscape, argmin_lambda
    >>> land = shift_landscape(img, txt, tau=0.01, batch_size=50)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LAMBDAS", "shift_landscape", "argmin_lambda"]

# λ from −2 to 6 in steps of 0.1: wide enough to show the loss rising again past λ = 1
LAMBDAS = [round(-2.0 + 0.1 * i, 1) for i in range(81)]


@torch.no_grad()
def shift_landscape(image_emb, text_emb, tau: float, lambdas=LAMBDAS, batch_size: int = 50,
                    order: Tensor | None = None, backend: str = "auto") -> list:
    """The contrastive loss at 1/τ of the shifted embeddings, for each λ.

    image_emb, text_emb: [N, d] paired embeddings (any scale; normalized here); Δ is the gap
    vector of all N pairs. The pairs (in ``order``, a permutation [N], when given) are cut into
    consecutive batches of ``batch_size`` (0: one batch of all N; a last partial batch is
    dropped) and the loss is ``gapops.contrastive_loss`` (mean over the batch's pairs).

    Returns [{"lambda", "loss" (mean over batches), "batch_loss" ([n_batches] floats),
    "gap" (||Δ'|| after the shift)}], one entry per λ.
    """
    import gapops  # at call time: gapops imports this package while it initializes

    x = F.normalize(torch.as_tensor(image_emb).detach().float(), dim=1)
    y = F.normalize(torch.as_tensor(text_emb).detach().float(), dim=1)
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"need paired [N, d] embeddings, got {tuple(x.shape)} and {tuple(y.shape)}")
    if order is not None:
        x, y = x[order], y[order]
    delta = x.mean(0) - y.mean(0)
    n = x.shape[0]
    b = batch_size if 0 < batch_size <= n else n
    out = []
    for lam in lambdas:
        xs = F.normalize(x - lam * delta / 2, dim=1)
        ys = F.normalize(y + lam * delta / 2, dim=1)
        per = [float(gapops.contrastive_loss(xs[i:i + b], ys[i:i + b], 1.0 / tau,
                                             backend=backend))
               for i in range(0, n - b + 1, b)]
        out.append({"lambda": float(lam), "loss": sum(per) / len(per), "batch_loss": per,
                    "gap": float((xs.mean(0) - ys.mean(0)).norm())})
    return out


def argmin_lambda(landscape: list) -> float:
    """The λ of the lowest loss in a :func:`shift_landscape` result."""
    return min(landscape, key=lambda p: p["loss"])["lambda"]
