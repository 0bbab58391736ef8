"""Offline paired data for the studies: a synthetic multimodal generator and handwritten digits.

Both return a :class:`PairedData`: image inputs, text inputs (float features, or token ids for
digits), class labels, and class prompts in the text tower's input format for zero-shot
accuracy. Everything is generated from a seed with local generators, so the same seed gives
the same data in any process (the resume guarantee relies on it) and the global RNGs are
left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor


@dataclass
class PairedData:
    """Paired samples split into train and test.

    images: float32 [N, Di]; texts: float32 [N, Dt] or int64 token ids [N, L] (0 = padding);
    labels: int64 [N]; prompts: [K, P, Dt] or [K, P, L], P prompts for each of K classes.
    ``train`` / ``test`` index rows; ``text_index[i]`` is the text paired with image i in
    training (the identity unless pairs were mismatched).
    """
    images: Tensor
    texts: Tensor
    labels: Tensor
    prompts: Tensor
    train: Tensor
    test: Tensor
    vocab: Optional[list] = None
    info: dict = field(default_factory=dict)

    @property
    def text_is_tokens(self) -> bool:
        return not self.texts.is_floating_point()


def mismatch_pairs(n: int, fraction: float, generator: torch.Generator) -> Tensor:
    """A text index map [n] that re-pairs a random ``fraction`` of the pairs among themselves.

    The chosen subset's texts are shuffled by a derangement (a random cyclic shift of the
    subset), so every chosen pair is really mismatched (Yaras et al. 2024's mismatched data).
    """
    idx = torch.arange(n)
    m = int(round(fraction * n))
    if m < 2:
        return idx
    chosen = torch.randperm(n, generator=generator)[:m]
    idx[chosen] = chosen.roll(1)
    return idx


def _random_map(in_dim: int, out_dim: int, hidden: int, rng: np.random.Generator, nonlinear: bool):
    """A fixed random view: z -> W2 tanh(W1 z + b1) (or a linear map A z)."""
    if not nonlinear:
        a = rng.standard_normal((in_dim, out_dim)) / np.sqrt(in_dim)
        return lambda z: z @ a
    w1 = rng.standard_normal((in_dim, hidden)) * (1.5 / np.sqrt(in_dim))
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, out_dim)) / np.sqrt(hidden)
    return lambda z: np.tanh(z @ w1 + b1) @ w2


def synthetic(n: int = 2560, latent_dim: int = 16, dim: int = 32, n_classes: int = 10,
              cond: float = 10.0, class_sep: float = 1.0, noise: float = 0.1,
              nonlinear: bool = True, test_fraction: float = 0.2, seed: int = 0) -> PairedData:
    """Two random views of a shared anisotropic latent with classes.

    z = μ_c + Σ^{1/2} ε with Σ = diag(λ_k), λ_k spread geometrically from 1 down to 1/cond²
    (so the latent's condition number is ``cond``), class means μ_c ~ N(0, class_sep² Σ);
    image = f(z) + noise·ε', text = g(z) + noise·ε'' with f, g fixed random tanh MLPs (linear
    maps when ``nonlinear=False``), each [n, dim] float32. Class prompts are the noise-free text
    view of each class mean, [K, 1, dim].
    """
    rng = np.random.default_rng(seed)
    sd = cond ** (-np.arange(latent_dim) / max(latent_dim - 1, 1))  # std devs 1 ... 1/cond
    means = rng.standard_normal((n_classes, latent_dim)) * sd * class_sep
    labels = rng.integers(0, n_classes, n)
    z = means[labels] + rng.standard_normal((n, latent_dim)) * sd
    f = _random_map(latent_dim, dim, 4 * dim, rng, nonlinear)
    g = _random_map(latent_dim, dim, 4 * dim, rng, nonlinear)
    images = f(z) + noise * rng.standard_normal((n, dim))
    texts = g(z) + noise * rng.standard_normal((n, dim))
    # standardize each view so that the encoders see inputs of unit scale whatever the maps
    mu_i, sd_i = images.mean(0), images.std(0) + 1e-8
    mu_t, sd_t = texts.mean(0), texts.std(0) + 1e-8
    images, texts = (images - mu_i) / sd_i, (texts - mu_t) / sd_t
    prompts = ((g(means) - mu_t) / sd_t)[:, None, :]
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    as_f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return PairedData(as_f(images), as_f(texts), torch.as_tensor(labels), as_f(prompts),
                      torch.as_tensor(perm[n_test:]), torch.as_tensor(perm[:n_test]),
                      info={"kind": "synthetic", "n": n, "latent_dim": latent_dim, "dim": dim,
                            "n_classes": n_classes, "cond": cond, "noise": noise,
                            "nonlinear": nonlinear, "seed": seed})


def info_gap(n: int = 2560, shared_dim: int = 8, specific_dim: int = 4, dim: int = 32,
             n_classes: int = 10, shared_sep: float = 0.5, specific_sep: float = 1.5,
             noise: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> PairedData:
    """A testbed with an information gap (Jiang et al. 2023's theorem): the image view carries
    label information that the text view lacks.

    Latents: shared s ~ N(μ_c, I) [shared_dim] seen by both views, with weak class means
    (μ_c ~ N(0, shared_sep²)); image-specific u ~ N(ν_c, I) [specific_dim] with strong class
    means (ν_c ~ N(0, specific_sep²)), seen by the image view only; text-specific v ~ N(0, I)
    [specific_dim], label-free, seen by the text view only. image = f([s, u]), text = g([s, v]),
    f, g fixed random tanh MLPs to ``dim`` plus noise, standardized. Exact alignment (text from
    image) can keep s only, so it loses u's label information: a probe on image embeddings
    gains from what is kept beyond the shared part. Class prompts: g of the class means with
    v = 0, [K, 1, dim].
    """
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((n_classes, shared_dim)) * shared_sep
    nu = rng.standard_normal((n_classes, specific_dim)) * specific_sep
    labels = rng.integers(0, n_classes, n)
    s = mu[labels] + rng.standard_normal((n, shared_dim))
    u = nu[labels] + rng.standard_normal((n, specific_dim))
    v = rng.standard_normal((n, specific_dim))
    f = _random_map(shared_dim + specific_dim, dim, 4 * dim, rng, True)
    g = _random_map(shared_dim + specific_dim, dim, 4 * dim, rng, True)
    images = f(np.concatenate([s, u], 1)) + noise * rng.standard_normal((n, dim))
    texts = g(np.concatenate([s, v], 1)) + noise * rng.standard_normal((n, dim))
    mu_i, sd_i = images.mean(0), images.std(0) + 1e-8
    mu_t, sd_t = texts.mean(0), texts.std(0) + 1e-8
    images, texts = (images - mu_i) / sd_i, (texts - mu_t) / sd_t
    prompts = ((g(np.concatenate([mu, np.zeros((n_classes, specific_dim))], 1)) - mu_t)
               / sd_t)[:, None, :]
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    as_f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return PairedData(as_f(images), as_f(texts), torch.as_tensor(labels), as_f(prompts),
                      torch.as_tensor(perm[n_test:]), torch.as_tensor(perm[:n_test]),
                      info={"kind": "info_gap", "n": n, "shared_dim": shared_dim,
                            "specific_dim": specific_dim, "dim": dim, "n_classes": n_classes,
                            "shared_sep": shared_sep, "specific_sep": specific_sep,
                            "noise": noise, "seed": seed})


_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CAPTIONS = ["a handwritten {d}", "the digit {w}", "a {thick} {d} written by hand",
             "a {slant} {w}", "an image of the number {w}", "a {thick} and {slant} digit {d}",
             "someone wrote a {w}", "a small scan of a {thick} {w}"]
_PROMPTS = ["a photo of the digit {w}", "a handwritten {d}", "the number {w}"]


def _style(images: np.ndarray, labels: np.ndarray) -> tuple[list, list]:
    """Per-image words read off the pixels: stroke weight and slant, relative to the class."""
    ink = images.reshape(len(images), -1).sum(1)
    pix = images.reshape(-1, 8, 8)
    rows, cols = np.mgrid[0:8, 0:8]
    mass = pix.sum((1, 2)) + 1e-8
    r0 = (pix * rows).sum((1, 2)) / mass
    c0 = (pix * cols).sum((1, 2)) / mass
    # slant: covariance of column against row, >0 when the top leans right
    slant = -(pix * (rows - r0[:, None, None]) * (cols - c0[:, None, None])).sum((1, 2)) / mass
    thick, lean = [], []
    for i, c in enumerate(labels):
        same = labels == c
        thick.append("bold" if ink[i] > np.median(ink[same]) else "thin")
        med, spread = np.median(slant[same]), np.std(slant[same])
        lean.append("right-leaning" if slant[i] > med + 0.3 * spread
                    else "left-leaning" if slant[i] < med - 0.3 * spread else "upright")
    return thick, lean


def _tokenize(sentences: list, vocab: dict, length: int) -> Tensor:
    ids = torch.zeros(len(sentences), length, dtype=torch.long)
    for i, s in enumerate(sentences):
        toks = [vocab[w] for w in s.split()][:length]
        ids[i, :len(toks)] = torch.tensor(toks)
    return ids


def digits(test_fraction: float = 0.2, seed: int = 0, n: Optional[int] = None) -> PairedData:
    """scikit-learn's bundled handwritten digits (1797 8×8 images, no download) with captions.

    Each image gets a caption drawn (seeded) from templates that name the digit and describe its
    stroke weight and slant measured from its pixels ("a bold right-leaning 7"), tokenized by
    a word-level vocabulary (0 = padding). images: float32 [N, 64] in [0, 1]; texts: int64
    [N, 12]; prompts: [10, 3, 12] class prompts ("a photo of the digit seven", ...).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # the study CLI turns this into a clear message
        raise ImportError("the digits data needs scikit-learn (pip install scikit-learn); "
                          "it ships the images, nothing is downloaded") from e
    d = load_digits()
    images, labels = d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    if n is not None and n < len(images):
        keep = rng.permutation(len(images))[:n]
        images, labels = images[keep], labels[keep]
    thick, lean = _style(images, labels)
    captions = [_CAPTIONS[rng.integers(len(_CAPTIONS))].format(
        d=c, w=_WORDS[c], thick=thick[i], slant=lean[i]) for i, c in enumerate(labels)]
    prompts = [[p.format(d=k, w=_WORDS[k]) for p in _PROMPTS] for k in range(10)]
    words = sorted({w for s in captions + sum(prompts, []) for w in s.split()})
    vocab = {w: i + 1 for i, w in enumerate(words)}
    length = 12
    texts = _tokenize(captions, vocab, length)
    prompt_ids = _tokenize(sum(prompts, []), vocab, length).reshape(10, len(_PROMPTS), length)
    perm = rng.permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    return PairedData(torch.as_tensor(images), texts, torch.as_tensor(labels), prompt_ids,
                      torch.as_tensor(perm[n_test:]), torch.as_tensor(perm[:n_test]),
                      vocab=["<pad>"] + words,
                      info={"kind": "digits", "n": len(images), "vocab_size": len(words) + 1,
                            "caption_example": captions[0], "seed": seed})


def build_data(kind: str, seed: int, **kwargs) -> PairedData:
    """'synthetic', 'info_gap' or 'digits' with the given options (see :func:`synthetic`,
    :func:`info_gap`, :func:`digits`)."""
    if kind == "synthetic":
        return synthetic(seed=seed, **kwargs)
    if kind == "info_gap":
        return info_gap(seed=seed, **kwargs)
    if kind == "digits":
        return digits(seed=seed, **kwargs)
    raise ValueError(f"unknown data kind {kind!r}; choose 'synthetic', 'info_gap' or 'digits'")
