"""Tiny two-tower models: separate towers, a shared trunk (SharedCLIP), and linear encoders.

Every model maps a batch of image inputs and text inputs to embeddings of width ``embed_dim``
(not normalized: the loss and the metrics normalize) and carries CLIP's learnable logit scale,
stored as its log and clamped to ≤ 100 as CLIP does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
from torch import Tensor, nn

MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(log_scale) to 100 (τ ≥ 0.01)
SCALE_PARAMS = ("exp", "softplus")  # logit scale = exp(ν) (CLIP) or softplus(ν) (Yaras's TR)


@dataclass
class ModelConfig:
    """kind: 'towers' (two separate towers), 'shared' (SharedCLIP: modality-specific input
    layers, one shared trunk and projection) or 'linear' (one bias-free linear map per modality,
    Ren & Li's setting). depth: trunk layers; private: add modality-specific heads (for the
    deep-feature-separation regularizer); init_tau: initial temperature (CLIP: 0.07);
    init_std: std of the linear encoders' weights (small init, as in Ren & Li's analysis);
    init_bias: add a learnable logit bias with this initial value (the sigmoid loss; SigLIP and
    open_clip start it at −10), None for none."""
    kind: str = "towers"
    hidden: int = 128
    depth: int = 2
    embed_dim: int = 32
    private: bool = False
    init_tau: float = 0.07
    init_std: float = 0.01
    init_bias: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TokenPool(nn.Module):
    """Word embeddings averaged over the non-padding tokens: int64 [B, L] -> float32 [B, dim]."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        return (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def mlp(in_dim: int, hidden: int, out_dim: int, depth: int) -> nn.Sequential:
    """``depth`` Linear layers in_dim -> hidden -> ... -> out_dim with ReLU between them."""
    dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
    layers = []
    for i in range(depth):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """image_encoder/text_encoder map inputs to [B, hidden]; the projections to [B, embed_dim].

    Passing the same trunk/projection module to both sides shares its parameters (SharedCLIP).
    With ``private`` heads, forward also returns modality-specific embeddings.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, image_proj: nn.Module,
                 text_proj: nn.Module, init_tau: float = 0.07, private_dims: tuple | None = None,
                 init_bias: float | None = None):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj, self.text_proj = image_proj, text_proj
        # the raw temperature parameter ν (the name is CLIP's): logit scale = exp(ν) by default
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_tau)))
        self.scale_param = "exp"
        if init_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))
        if private_dims is not None:
            self.image_private = nn.Linear(*private_dims)
            self.text_private = nn.Linear(*private_dims)

    def logit_scale(self) -> Tensor:
        """1/τ = exp(ν) (or softplus(ν), see :meth:`set_scale_param`) clamped to ≤ 100: a 0-dim
        tensor, differentiable below the clamp."""
        nu = self.log_scale
        s = nu.exp() if self.scale_param == "exp" else nn.functional.softplus(nu)
        return s.clamp(max=MAX_LOGIT_SCALE)

    def set_scale_param(self, kind: str) -> None:
        """Reparameterize the logit scale as exp(ν) ('exp', CLIP) or softplus(ν) ('softplus',
        Yaras et al.'s TR arm), keeping its current value."""
        if kind not in SCALE_PARAMS:
            raise ValueError(f"unknown scale_param {kind!r}; choose one of {SCALE_PARAMS}")
        if kind == self.scale_param:
            return
        with torch.no_grad():
            s = self.logit_scale()
            # softplus⁻¹(s) = s + log(1 − e^{−s}); exp⁻¹(s) = log s
            self.log_scale.copy_(s + torch.log(-torch.expm1(-s)) if kind == "softplus"
                                 else s.log())
        self.scale_param = kind

    @torch.no_grad()
    def clamp_scale_(self) -> None:
        """CLIP's clamp after each step: ν such that the scale stays ≤ 100."""
        top = math.log(MAX_LOGIT_SCALE) if self.scale_param == "exp" else \
            MAX_LOGIT_SCALE + math.log(-math.expm1(-MAX_LOGIT_SCALE))
        self.log_scale.clamp_(max=top)

    def encode_image(self, images: Tensor) -> Tensor:
        """[B, ...] image inputs -> [B, embed_dim] float32."""
        return self.image_proj(self.image_encoder(images))

    def encode_text(self, texts: Tensor) -> Tensor:
        """[B, Dt] float or [B, L] token ids -> [B, embed_dim] float32."""
        return self.text_proj(self.text_encoder(texts))

    def forward(self, images: Tensor, texts: Tensor) -> dict:
        """{'image', 'text'} embeddings [B, embed_dim] (+ 'image_private'/'text_private')."""
        hi, ht = self.image_encoder(images), self.text_encoder(texts)
        out = {"image": self.image_proj(hi), "text": self.text_proj(ht)}
        if hasattr(self, "image_private"):
            out["image_private"] = self.image_private(hi)
            out["text_private"] = self.text_private(ht)
        return out


def _input_layer(example: Tensor, hidden: int, vocab_size: int | None) -> nn.Module:
    if example.is_floating_point():
        return nn.Linear(example.shape[1], hidden)
    return TokenPool(vocab_size, hidden)


def build_model(cfg: ModelConfig, images: Tensor, texts: Tensor,
                vocab_size: int | None = None) -> TwoTower:
    """The model ``cfg`` describes for inputs shaped like ``images`` / ``texts`` (a few rows).

    Parameters are drawn from the global torch RNG: seed it first for reproducible inits.
    """
    h, e = cfg.hidden, cfg.embed_dim
    if cfg.kind == "linear":
        enc_i = nn.Linear(images.shape[1], e, bias=False)
        enc_t = nn.Linear(texts.shape[1], e, bias=False)
        for lin in (enc_i, enc_t):
            nn.init.normal_(lin.weight, std=cfg.init_std)
        return TwoTower(enc_i, enc_t, nn.Identity(), nn.Identity(), cfg.init_tau,
                        init_bias=cfg.init_bias)
    in_i = _input_layer(images, h, vocab_size)
    in_t = _input_layer(texts, h, vocab_size)

    def trunk():
        # ReLU, then depth-1 hidden layers, then ReLU: inputs -> [B, hidden] features
        body = mlp(h, h, h, cfg.depth - 1) if cfg.depth > 1 else nn.Identity()
        return nn.Sequential(nn.ReLU(), body, nn.ReLU()) if cfg.depth > 1 else nn.ReLU()

    private = (h, e) if cfg.private else None
    if cfg.kind == "shared":
        t, proj = trunk(), nn.Linear(h, e, bias=False)
        return TwoTower(nn.Sequential(in_i, t), nn.Sequential(in_t, t), proj, proj,
                        cfg.init_tau, private, cfg.init_bias)
    if cfg.kind == "towers":
        return TwoTower(nn.Sequential(in_i, trunk()), nn.Sequential(in_t, trunk()),
                        nn.Linear(h, e, bias=False), nn.Linear(h, e, bias=False),
                        cfg.init_tau, private, cfg.init_bias)
    raise ValueError(f"unknown model kind {cfg.kind!r}; choose 'towers', 'shared' or 'linear'")
