"""The embedding-shift study: the contrastive loss of trained embeddings moved along the gap."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import gapops

from .loop import embed

LAMBDAS = [round(-1.0 + 0.1 * i, 1) for i in range(21)]  # λ ∈ [−1, 1]; λ = 1 closes the gap


@torch.no_grad()
def shift_landscape(image_emb, text_emb, tau: float, lambdas=LAMBDAS, batch_size: int = 0,
                    backend: str = "auto") -> list:
    """Liang et al.'s shift: x̂' = normalize(x̂ − λΔ/2), ŷ' = normalize(ŷ + λΔ/2), Δ the gap
    vector of all N pairs; returns [{"lambda", "loss", "gap"}] with the fused contrastive loss at
    1/τ, averaged over consecutive batches of ``batch_size`` pairs (0: one batch of all N).

    image_emb, text_emb: [N, d] paired embeddings (normalized here).
    """
    x, y = F.normalize(image_emb.float(), dim=1), F.normalize(text_emb.float(), dim=1)
    delta = x.mean(0) - y.mean(0)
    n = x.shape[0]
    b = batch_size if 0 < batch_size <= n else n
    out = []
    for lam in lambdas:
        xs = F.normalize(x - lam * delta / 2, dim=1)
        ys = F.normalize(y + lam * delta / 2, dim=1)
        losses = [float(gapops.contrastive_loss(xs[i:i + b], ys[i:i + b], 1.0 / tau,
                                                backend=backend))
                  for i in range(0, n - b + 1, b)]
        out.append({"lambda": lam, "loss": sum(losses) / len(losses),
                    "gap": float((xs.mean(0) - ys.mean(0)).norm())})
    return out


def shift_arm(trained: dict, model, data, tau: float, batch_size: int, device: str,
              backend: str) -> dict:
    """One arm (one τ) from a trained model: the landscape of the *training* loss (training
    pairs, in batches of the training batch size, 4 batches at most) and its minimum, plus the
    training run's history and final metrics (shared by all arms of a seed)."""
    rows = data.train[:4 * batch_size]
    img, txt, _ = embed(model, data, rows, device)
    land = shift_landscape(img, txt, tau, batch_size=batch_size, backend=backend)
    at = {p["lambda"]: p["loss"] for p in land}
    best = min(land, key=lambda p: p["loss"])
    final = {**trained["final"], "argmin_lambda": best["lambda"], "loss_at_0": at[0.0],
             "loss_closed": at[1.0], "loss_shift_min": best["loss"] - at[0.0]}
    return {**trained, "final": final, "landscape": land}
