"""The embedding-shift study (Liang et al. 2022, section 4.2): on bundled real CLIP embeddings,
and on a toy model trained here (a labelled example)."""
from __future__ import annotations

import torch

from gapops.metrics import summary
from gapops.metrics.shift import LAMBDAS, argmin_lambda, shift_landscape

from . import real
from .loop import embed

TOY_LAMBDAS = [round(-1.0 + 0.1 * i, 1) for i in range(31)]  # λ ∈ [−1, 2] for the toy model


def _final(land: list) -> dict:
    at = {p["lambda"]: p for p in land}
    best = argmin_lambda(land)
    return {"argmin_lambda": best, "loss_at_0": at[0.0]["loss"], "loss_closed": at[1.0]["loss"],
            "loss_shift_min": at[best]["loss"] - at[0.0]["loss"]}


def real_shift_seed(model: str, taus: list, seed: int, batch_size: int = 50,
                    backend: str = "auto") -> list:
    """One seed of the real-embedding shift: the pairs of bundled ``model`` in the released order
    (seed 0, as Liang et al. ran it) or a seeded random order (other seeds), cut into batches of ``batch_size`` (held-out pairs: MSCOCO val2017 for CLIP), the landscape
    over λ ∈ [−2, 6] at each τ of ``taus``. Returns one run dict per τ with ``final``
    (argmin_lambda, loss_at_0, loss_closed, loss_shift_min, gap...), ``landscape`` and
    ``batches`` (per-batch loss at λ = 0 and λ = 1, for the paired interval)."""
    x, y = real.load(model)
    order = None if seed == 0 else \
        torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    base = summary(x, y, probe=False)
    out = []
    for tau in taus:
        land = shift_landscape(x, y, tau, LAMBDAS, batch_size, order=order, backend=backend)
        at = {p["lambda"]: p for p in land}
        final = {**base, "eval_tau": tau, **_final(land)}
        out.append({"history": [{"epoch": 0, **final}], "final": final, "steps": 0,
                    "step_s": 0.0, "loss_s": 0.0, "eval_s": 0.0, "completed": True,
                    "landscape": [{"lambda": p["lambda"], "loss": p["loss"], "gap": p["gap"]}
                                  for p in land],
                    "batches": {"loss_at_0": at[0.0]["batch_loss"],
                                "loss_at_1": at[1.0]["batch_loss"]}})
    return out


def shift_arm(trained: dict, model, data, tau: float, batch_size: int, device: str,
              backend: str) -> dict:
    """One toy arm (one τ) from a trained model: the landscape of the training loss (training
    pairs, in batches of the training batch size, 4 batches at most) over λ ∈ [−1, 2], plus the
    training run's history and final metrics (shared by all arms of a seed)."""
    rows = data.train[:4 * batch_size]
    img, txt, _ = embed(model, data, rows, device)
    land = shift_landscape(img, txt, tau, TOY_LAMBDAS, batch_size=batch_size, backend=backend)
    final = {**trained["final"], **_final(land)}
    return {**trained, "final": final,
            "landscape": [{"lambda": p["lambda"], "loss": p["loss"]} for p in land]}
