"""The bundled real embeddings (Liang et al. 2022's released CLIP / ConVIRT features, MIT).

Files live in ``gapops/studies/pretrained/`` (package data, with their LICENSE and README).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DIR = Path(__file__).with_name("pretrained")
MODELS = {
    "clip": ("features_clip.npy", "OpenAI CLIP ViT-B/16, pretrained; 500 MSCOCO val2017 pairs"),
    "clip_random": ("features_clip_random.npy", "CLIP ViT-B/16 architecture, random init"),
    "convirt": ("features_convirt.npy", "ConVIRT (chest X-ray / report), pretrained; 500 pairs"),
    "convirt_random": ("features_convirt_random.npy", "ConVIRT architecture, random init"),
}


def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [500, 512], text [500, 512]) float32 embeddings of bundled model ``name``."""
    if name not in MODELS:
        raise KeyError(f"unknown embeddings {name!r}; choose one of {', '.join(MODELS)}")
    a = torch.from_numpy(np.load(DIR / MODELS[name][0], allow_pickle=False))
    return a[0].float(), a[1].float()


def describe(name: str) -> dict:
    """What the JSON's ``config.data`` says about bundled embeddings ``name``."""
    file, what = MODELS[name]
    return {"kind": "embeddings", "name": name, "file": f"gapops/studies/pretrained/{file}",
            "model": what, "source": "Liang et al. 2022, released features (MIT)"}
