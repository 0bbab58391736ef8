"""The reference training loop: AdamW on the fused loss, gap metrics each epoch, exact resume.

Thin on purpose: one function, :func:`train`. Each step encodes a batch, computes
``gapops.contrastive_loss`` (the fused op; ``gapops.sigmoid_loss`` for the sigmoid objective)
on the embeddings (with a fresh ``swap_mask`` or per-entry swap when swapping), adds the optional regularizers, and steps AdamW. Checkpoints hold everything an
interrupted run needs to finish with bit-identical results: model, optimizer, the loop's own
generator and the global RNGs, the epoch and the history.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

import gapops
from gapops import metrics

from . import checkpoint as ckpt
from . import losses
from .data import PairedData, mismatch_pairs


@dataclass
class TrainConfig:
    """How to train. temperature: 'learnable' (CLIP, from the model's init τ), 'fixed' (``tau``)
    or 'schedule' (``tau`` → ``tau_end`` by ``schedule``: 'cosine', 'linear' in log τ,
    'linear_tau' linear in τ (Yaras et al.'s TS), or 'step' at ``step_at`` of training).
    objective: 'clip' (the fused contrastive loss), 'sigmoid' (``gapops.sigmoid_loss``, with
    the model's learnable logit bias) or 'align' (positive pairs only); scale_lr_mult: the
    learnable scale parameter's learning rate over ``lr`` (CLIP: 1; Yaras et al.'s SLRT: 0.1);
    scale_param: the scale as 'exp'(ν) (CLIP) or 'softplus'(ν) (Yaras et al.'s TR).
    swap_p / swap_mode / swap_steps: modality swapping on a random ``swap_steps`` fraction of
    the steps (1: every step); on such a step 'pair' swaps each pair's whole image and text
    with probability p (gapops' ``swap_mask``), 'hard' exchanges each embedding entry with
    probability p (Yaras et al.'s HS: p = 0.5), 'soft' moves each entry chosen with
    probability p a U(0, 1) fraction of the way to its partner's value (their SS: p = 1);
    mismatch: fraction of training pairs re-paired wrongly; augment: std of the Gaussian noise
    added to float inputs at every step (a fresh draw per step). imsep/dfs/bridge/geo: weights
    of the regularizers in :mod:`gapops.studies.losses`."""
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    scale_lr_mult: float = 1.0
    scale_param: str = "exp"
    weight_decay: float = 0.05
    temperature: str = "learnable"
    tau: float = 0.07
    tau_end: float = 0.01
    schedule: str = "cosine"
    step_at: float = 0.5
    objective: str = "clip"
    swap_p: float = 0.0
    swap_mode: str = "pair"
    swap_steps: float = 1.0
    augment: float = 0.0
    mismatch: float = 0.0
    imsep: float = 0.0
    dfs: float = 0.0
    bridge: float = 0.0
    bridge_noise: float = 0.3
    geo: float = 0.0
    backend: str = "auto"
    deterministic: bool = True
    max_eval: int = 512
    probe: bool = True
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def temperature_at(cfg: TrainConfig, progress: float) -> float:
    """τ for 'fixed' / 'schedule' at ``progress`` ∈ [0, 1] of training."""
    if cfg.temperature == "fixed":
        return cfg.tau
    if cfg.schedule == "cosine":
        return cfg.tau_end + (cfg.tau - cfg.tau_end) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear_tau":  # linear in τ (Yaras et al.'s TS)
        return cfg.tau + progress * (cfg.tau_end - cfg.tau)
    if cfg.schedule == "linear":  # linear in log τ
        return math.exp(math.log(cfg.tau) + progress * (math.log(cfg.tau_end) - math.log(cfg.tau)))
    if cfg.schedule == "step":
        return cfg.tau if progress < cfg.step_at else cfg.tau_end
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


@torch.no_grad()
def embed(model, data: PairedData, rows: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
    """Image and text embeddings [n, d] of ``rows`` and class-prompt embeddings [K, P, d]."""
    model.eval()
    img = model.encode_image(data.images[rows].to(device))
    txt = model.encode_text(data.texts[rows].to(device))
    k, p = data.prompts.shape[:2]
    cls = model.encode_text(data.prompts.reshape(k * p, *data.prompts.shape[2:]).to(device))
    model.train()
    return img, txt, cls.reshape(k, p, -1)


def evaluate(model, data: PairedData, cfg: TrainConfig) -> dict:
    """:func:`gapops.metrics.summary` on (up to ``max_eval`` rows of) the held-out split."""
    rows = data.test[:cfg.max_eval]
    img, txt, cls = embed(model, data, rows, cfg.device)
    out = metrics.summary(img.cpu(), txt.cpu(), labels=data.labels[rows], class_emb=cls.cpu(),
                          probe=cfg.probe)
    if cfg.probe and hasattr(model, "image_private"):
        # the image representation a downstream probe reads: shared ⊕ modality-specific features
        with torch.no_grad():
            model.eval()
            priv = model(data.images[rows].to(cfg.device), data.texts[rows].to(cfg.device))
            model.train()
        full = torch.cat([torch.nn.functional.normalize(img, dim=1),
                          torch.nn.functional.normalize(priv["image_private"], dim=1)], 1)
        out["probe_image"] = metrics.linear_probe_accuracy(full.cpu(), data.labels[rows], folds=5)
    elif cfg.probe:
        out["probe_image"] = out["class_probe"]
    return out


def _param_groups(model, cfg: TrainConfig) -> list:
    # CLIP's recipe: weight decay on matrices (embedding tables too), none on biases or the scale
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name == "log_scale":
            continue
        (decay if p.dim() >= 2 else rest).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if model.log_scale.requires_grad:
        # its own learning rate: CLIP's τ falls over ~10^5 steps; ours has ~10^2 to get there
        groups.append({"params": [model.log_scale], "weight_decay": 0.0,
                       "lr": cfg.lr * cfg.scale_lr_mult})
    return groups


def _regularizers(cfg: TrainConfig, model, out: dict, images: Tensor, texts: Tensor,
                  scale: Tensor, gen: torch.Generator) -> Optional[Tensor]:
    terms = []
    if cfg.imsep:
        terms.append(cfg.imsep * losses.imsep_loss(out["image"], out["text"], scale,
                                                   losses.semantic_features(texts)))
    noise = cfg.augment or cfg.bridge_noise  # the second view's augmentation

    def view(x):
        if not x.is_floating_point():
            return x
        return x + noise * torch.randn(x.shape, generator=gen).to(x.device)

    if cfg.dfs:
        other = model(view(images), view(texts))
        terms.append(cfg.dfs * (
            losses.feature_separation_loss(out["image"], out["image_private"],
                                           other["image_private"])
            + losses.feature_separation_loss(out["text"], out["text_private"],
                                             other["text_private"])))
    if cfg.bridge:
        mid = model.encode_image(view(images))
        t = 0.1 + 0.8 * torch.rand(images.shape[0], generator=gen).to(images.device)
        terms.append(cfg.bridge * losses.bridge_loss(mid, out["image"], out["text"], t))
    if cfg.geo:
        terms.append(cfg.geo * losses.geometric_loss(out["image"], out["text"]))
    return sum(terms) if terms else None


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _fingerprint(cfg: TrainConfig, seed: int) -> dict:
    d = cfg.to_dict()
    d.pop("device")  # a run may resume on another device
    return {"seed": seed, **d}


def train(model, data: PairedData, cfg: TrainConfig, seed: int, ckpt_path=None,
          resume: bool = False, stop_after: Optional[int] = None,
          on_epoch: Optional[Callable[[dict], None]] = None) -> dict:
    """Train ``model`` on ``data.train`` and evaluate on ``data.test`` after every epoch.

    Seeds the loop's generator (batch order, swap masks, augmentations, mismatch) from
    ``seed``; the model must already be initialized (seeded by the caller). With ``ckpt_path``
    a checkpoint is written atomically after every epoch; ``resume=True`` continues from it
    (a finished checkpoint is returned as is). ``stop_after`` ends after that many epochs, as
    an interrupt would. ``on_epoch(entry)`` is called with each history entry.

    Returns {"history": [{"epoch", "loss", "tau", metric...}], "final": {...}, "steps",
    "step_s", "loss_s", "eval_s", "completed"}: history[0] is the model at initialization;
    step_s is the time inside training steps, loss_s the part inside the contrastive loss
    (forward and backward).
    """
    device = torch.device(cfg.device)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    n_train = data.train.numel()
    text_index = mismatch_pairs(n_train, cfg.mismatch, gen)
    learnable = cfg.temperature == "learnable"
    model.set_scale_param(cfg.scale_param)
    model.log_scale.requires_grad_(learnable)
    if cfg.objective == "sigmoid" and not hasattr(model, "logit_bias"):
        raise ValueError("objective='sigmoid' needs a model with a logit bias "
                         "(ModelConfig.init_bias, e.g. -10 as SigLIP)")
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr)
    fp = _fingerprint(cfg, seed)

    state = {"epoch": 0, "history": [], "steps": 0, "step_s": 0.0, "loss_s": 0.0, "eval_s": 0.0}
    saved = ckpt.load(ckpt_path) if (resume and ckpt_path) else None
    if saved is not None:
        if saved["fingerprint"] != fp:
            raise ValueError(f"checkpoint {ckpt_path} was written by another configuration; "
                             "delete it or run without --resume")
        model.load_state_dict(saved["model"])
        state = saved["state"]
        if saved["completed"]:  # a finished run: its model and history, nothing to redo
            return _result(state, True)
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        ckpt.set_rng_state(saved["rng"])

    images = data.images[data.train].to(device)
    texts = data.texts[data.train[text_index]].to(device)
    with torch.no_grad():
        embed_dim = model.encode_image(images[:1]).shape[1]
    steps_per_epoch = max(1, n_train // cfg.batch_size)  # drop_last: every batch has B pairs
    total_steps = cfg.epochs * steps_per_epoch

    if state["epoch"] == 0 and not state["history"]:
        t = time.perf_counter()
        entry = {"epoch": 0, "step": 0, **_temperature_entry(model, cfg, 0.0),
                 **evaluate(model, data, cfg)}
        state["eval_s"] += time.perf_counter() - t
        state["history"].append(entry)
        if on_epoch:
            on_epoch(entry)

    while state["epoch"] < cfg.epochs:
        if stop_after is not None and state["epoch"] >= stop_after:
            return _result(state, False)
        perm = torch.randperm(n_train, generator=gen).to(device)
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            progress = state["steps"] / max(total_steps - 1, 1)
            mask = None
            # Yaras et al. swap on a random fraction of the steps (no draw when it is all)
            swap_now = cfg.swap_p > 0 and (cfg.swap_steps >= 1.0 or
                                           float(torch.rand(1, generator=gen)) < cfg.swap_steps)
            if swap_now:  # a fresh mask for every batch
                shape = (idx.numel(),) if cfg.swap_mode == "pair" else \
                    (idx.numel(), embed_dim)
                mask = (torch.rand(shape, generator=gen) < cfg.swap_p).to(device)
            loss, dt_step, dt_loss = _step(model, opt, cfg, _augment(images[idx], cfg, gen),
                                           _augment(texts[idx], cfg, gen), mask, progress,
                                           learnable, gen, device)
            loss_sum += loss
            state["steps"] += 1
            state["step_s"] += dt_step
            state["loss_s"] += dt_loss
        state["epoch"] += 1
        t = time.perf_counter()
        entry = {"epoch": state["epoch"], "step": state["steps"],
                 "loss": loss_sum / steps_per_epoch,
                 **_temperature_entry(model, cfg, state["steps"] / max(total_steps - 1, 1)),
                 **evaluate(model, data, cfg)}
        state["eval_s"] += time.perf_counter() - t
        state["history"].append(entry)
        if on_epoch:
            on_epoch(entry)
        if ckpt_path:
            done = state["epoch"] >= cfg.epochs
            saved = {"model": model.state_dict(), "state": state, "fingerprint": fp,
                     "completed": done}
            if not done:  # a finished run needs no optimizer or RNG state: a third the size
                saved.update(optimizer=opt.state_dict(), generator=gen.get_state(),
                             rng=ckpt.rng_state())
            ckpt.save_atomic(saved, ckpt_path)
    return _result(state, True)


def _loss_kw(cfg: TrainConfig) -> dict:
    """``deterministic=`` where the public signature has it (bit-exact resume needs it)."""
    try:
        params = inspect.signature(gapops.contrastive_loss).parameters
    except (TypeError, ValueError):
        return {}
    return {"deterministic": cfg.deterministic} if "deterministic" in params else {}


def _augment(x: Tensor, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    """Float inputs [B, D] plus N(0, augment²) noise (token ids and augment = 0: unchanged)."""
    if not cfg.augment or not x.is_floating_point():
        return x
    return x + cfg.augment * torch.randn(x.shape, generator=gen).to(x.device)


def swap_entries(a: Tensor, b: Tensor, mask: Tensor, mode: str,
                 gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Yaras et al.'s per-entry modality swapping of paired embeddings a, b [B, d].

    Rows are L2-normalized first (so the entries of both modalities are on one scale); where
    ``mask`` [B, d] is True, 'hard' exchanges a's and b's entry, 'soft' moves each toward the
    other by a fraction α ~ U(0, 1) (a_ij + α(b_ij − a_ij), b_ij + α(a_ij − b_ij)).
    Differentiable in a and b.
    """
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    if mode == "hard":
        return torch.where(mask, b, a), torch.where(mask, a, b)
    if mode == "soft":
        alpha = torch.rand(a.shape, generator=gen).to(a.device) * mask
        return a + alpha * (b - a), b + alpha * (a - b)
    raise ValueError(f"unknown swap_mode {mode!r}; choose 'pair', 'hard' or 'soft'")


def _tau_now(model, cfg: TrainConfig, progress: float) -> float:
    if cfg.temperature == "learnable":
        return float(1.0 / model.logit_scale().detach())
    return temperature_at(cfg, min(progress, 1.0))


def _temperature_entry(model, cfg: TrainConfig, progress: float) -> dict:
    """{"tau"} (+ "bias" for the sigmoid loss) for a history entry."""
    out = {"tau": _tau_now(model, cfg, progress)}
    if cfg.objective == "sigmoid":
        out["bias"] = float(model.logit_bias.detach())
    return out


def _step(model, opt, cfg: TrainConfig, images: Tensor, texts: Tensor, mask, progress: float,
          learnable: bool, gen: torch.Generator, device) -> tuple[float, float, float]:
    """One optimizer step -> (loss value, step seconds, contrastive-loss seconds).

    The graph is cut at the embeddings so that the loss's forward *and* backward can be timed
    on their own: the loss runs on detached leaves, then the encoders' backward is driven by
    the leaves' gradients (the chain rule, unchanged; one extra autograd call).
    """
    _sync(device)
    t0 = time.perf_counter()
    out = model(images, texts)
    scale = model.logit_scale() if learnable else \
        torch.tensor(1.0 / temperature_at(cfg, progress), device=device)
    a = out["image"].detach().requires_grad_()
    b = out["text"].detach().requires_grad_()
    s = scale.detach().requires_grad_(learnable)
    _sync(device)
    t1 = time.perf_counter()
    bias = None
    if cfg.objective == "sigmoid":
        bias = model.logit_bias.detach().requires_grad_()
        pair = mask is not None and mask.dim() == 1
        a_in, b_in = (a, b) if mask is None or pair else \
            swap_entries(a, b, mask, cfg.swap_mode, gen)
        loss = losses.sigmoid_loss(a_in, b_in, s, bias, backend=cfg.backend,
                                   **({"swap_mask": mask} if pair else {}), **_loss_kw(cfg))
    elif cfg.objective == "clip" and mask is not None and mask.dim() == 2:
        a_in, b_in = swap_entries(a, b, mask, cfg.swap_mode, gen)
        loss = gapops.contrastive_loss(a_in, b_in, s, backend=cfg.backend, **_loss_kw(cfg))
    elif cfg.objective == "clip":
        loss = gapops.contrastive_loss(a, b, s, swap_mask=mask, backend=cfg.backend,
                                       **_loss_kw(cfg))
    elif cfg.objective == "align":
        loss = losses.alignment_loss(a, b)
    else:
        raise ValueError(f"unknown objective {cfg.objective!r}; choose 'clip', 'sigmoid' or "
                         "'align'")
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    roots, grads = [out["image"], out["text"]], [a.grad, b.grad]
    if learnable and s.grad is not None:
        roots.append(scale)
        grads.append(s.grad)
    if bias is not None:
        roots.append(model.logit_bias)
        grads.append(bias.grad)
    reg = _regularizers(cfg, model, out, images, texts, scale, gen)
    if reg is not None:
        roots.append(reg)
        grads.append(torch.ones_like(reg))
    torch.autograd.backward(roots, grads)
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.clamp_scale_()  # CLIP clamps the learnable scale to ≤ 100 after each step
    _sync(device)
    t3 = time.perf_counter()
    return float(loss.detach()), t3 - t0, t2 - t1


def gap_slope(history: list, fraction: float = 0.25) -> float:
    """Least-squares slope of the gap per epoch over the last ``fraction`` of the history (at
    least 3 entries): how far training is from a settled gap (0 when fewer than 3 entries)."""
    pts = [(h["epoch"], h["gap"]) for h in history if "gap" in h]
    k = max(3, int(round(len(pts) * fraction)))
    pts = pts[-k:]
    if len(pts) < 3:
        return 0.0
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _result(state: dict, completed: bool) -> dict:
    hist = state["history"]
    final = {k: v for k, v in hist[-1].items() if k != "epoch"} if hist else {}
    if len(hist) > 1:
        final["gap_slope"] = gap_slope(hist)
    return {"history": hist, "final": final, "steps": state["steps"], "step_s": state["step_s"],
            "loss_s": state["loss_s"], "eval_s": state["eval_s"], "completed": completed}
