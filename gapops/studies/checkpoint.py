"""Atomic checkpoints and RNG-state capture: what an exact resume after an interrupt needs."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    """The global RNG states of torch (CPU, and CUDA when present), numpy and python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_atomic(obj, path) -> None:
    """torch.save to PATH.tmp, fsync, then os.replace: a crash leaves the old file or the new
    one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """The checkpoint at ``path`` (on the CPU), or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    # our own files: RNG states hold numpy arrays and python tuples, so weights_only is off
    return torch.load(path, map_location="cpu", weights_only=False)
