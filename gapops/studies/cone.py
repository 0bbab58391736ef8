"""The cone study: embeddings of randomly initialized towers, measured without training."""
from __future__ import annotations

import torch

from gapops import metrics

from .checkpoint import seed_everything
from .data import build_data
from .loop import embed
from .models import ModelConfig, build_model
from .registry import Arm, Study


def _pca2(points: torch.Tensor) -> torch.Tensor:
    """[n, d] -> [n, 2]: coordinates on the two leading principal axes (of normalized rows)."""
    x = torch.nn.functional.normalize(points.double(), dim=1)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()


def run_cone(study: Study, arm: Arm, seed: int, scale: str, device: str = "cpu") -> dict:
    """Measure one depth's towers at initialization on held-out data and on random inputs.

    Returns a run result like :func:`gapops.studies.loop.train`'s, with a single history entry
    (epoch 0), plus ``scatter``: 2-D PCA coordinates of 100 image and 100 text embeddings.
    """
    data_kw, model_kw, train_kw = study.resolve(scale, arm)
    data = build_data(study.data, seed, **data_kw)
    seed_everything(seed)
    model = build_model(ModelConfig(**model_kw), data.images[:2], data.texts[:2],
                        len(data.vocab) if data.vocab else None).to(device)
    rows = data.test[:train_kw["max_eval"]]
    img, txt, cls = embed(model, data, rows, device)
    final = metrics.summary(img.cpu(), txt.cpu(), labels=data.labels[rows], class_emb=cls.cpu())
    # Liang et al. feed random noise: the cone is the network's doing, not the data's
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(rows.numel(), data.images.shape[1], generator=g).to(device)
    with torch.no_grad():
        final["cone_random"] = metrics.cone_cosine(model.encode_image(noise).cpu())
    k = min(100, rows.numel())
    xy = _pca2(torch.cat([img[:k].cpu(), txt[:k].cpu()]))
    return {"history": [{"epoch": 0, **final}], "final": final, "steps": 0, "step_s": 0.0,
            "loss_s": 0.0, "eval_s": 0.0, "completed": True,
            "scatter": {"image": xy[:k].tolist(), "text": xy[k:].tolist()}}
