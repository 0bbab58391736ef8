"""Modality-gap metrics on any pair of embedding tensors (docs/studies.md).

Also a command line for your own model's embeddings: ``python -m gapops.metrics EMB.npy --json``
(see :mod:`gapops.metrics.__main__`), and :func:`gapops.metrics.shift.shift_landscape`.

Every function L2-normalizes its inputs itself (rows of ``[N, d]`` tensors; numpy arrays are
accepted too), works without gradients and returns Python floats (``gap_vector`` returns a
tensor). Means over pairs use O(N*d) identities where the math allows; the metrics that are
O(N^2) by nature (uniformity, retrieval) work in row chunks so memory stays O(chunk*N).

    >>> import torch, gapops.metrics as M
    >>> x = torch.randn(100, 16); M.modality_gap(x, x)
    0.0
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gap_vector", "modality_gap", "cone_cosine", "cross_cosine", "alignment", "uniformity",
           "linear_probe_accuracy", "linear_separability", "singular_values", "condition_number",
           "noise_condition_number", "effective_rank", "retrieval_recall", "zero_shot_accuracy",
           "summary"]

_CHUNK = 1024  # rows per block for the O(N^2) metrics: a 1024 x N float32 block at most


def _unit(emb) -> Tensor:
    """[N, d] -> float32 (float64 kept) rows of unit length, detached."""
    t = torch.as_tensor(emb).detach()
    if t.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [N, d], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"embeddings are empty: shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.float()
    return F.normalize(t, dim=1, eps=1e-12)


def _pair(image_emb, text_emb) -> tuple[Tensor, Tensor]:
    x, y = _unit(image_emb), _unit(text_emb)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"image and text embeddings differ in width: {x.shape[1]} vs {y.shape[1]}")
    y = y.to(x.device, x.dtype)
    return x, y


@torch.no_grad()
def gap_vector(image_emb, text_emb) -> Tensor:
    """Δ = mean_i x̂_i − mean_j ŷ_j (Liang et al. 2022). [N, d], [M, d] -> [d] float32."""
    x, y = _pair(image_emb, text_emb)
    return x.mean(0) - y.mean(0)


@torch.no_grad()
def modality_gap(image_emb, text_emb) -> float:
    """Gap distance ||Δ||: 0 when the modalities share a centroid, √2 for two orthogonal points."""
    return float(gap_vector(image_emb, text_emb).norm())


@torch.no_grad()
def cone_cosine(emb) -> float:
    """Mean cosine x̂_i·x̂_j over pairs i ≠ j of one modality (≈0 on the sphere, →1 in a cone).

    O(N*d): ||Σ x̂_i||² = N + Σ_{i≠j} x̂_i·x̂_j. [N, d] with N ≥ 2 -> float.
    """
    x = _unit(emb)
    n = x.shape[0]
    if n < 2:
        raise ValueError("cone_cosine needs at least 2 embeddings")
    s = x.sum(0)
    return float((s.dot(s) - n) / (n * (n - 1)))


@torch.no_grad()
def cross_cosine(image_emb, text_emb) -> float:
    """Mean cross-modal cosine x̂_i·ŷ_j over all i, j, = mean(x̂)·mean(ŷ) in O(N*d)."""
    x, y = _pair(image_emb, text_emb)
    return float(x.mean(0).dot(y.mean(0)))


@torch.no_grad()
def alignment(image_emb, text_emb) -> float:
    """E_i ||x̂_i − ŷ_i||² over the N pairs (Wang & Isola 2020, α = 2); 0 for identical pairs."""
    x, y = _pair(image_emb, text_emb)
    if x.shape[0] != y.shape[0]:
        raise ValueError("alignment needs paired embeddings (same N)")
    return float((x - y).pow(2).sum(1).mean())


@torch.no_grad()
def uniformity(emb, t: float = 2.0, max_n: int = 2048, seed: int = 0) -> float:
    """log E_{i≠j} exp(−t ||û_i − û_j||²) of one modality (Wang & Isola 2020); lower = more uniform.

    O(N²·d) by nature: computed in row blocks with a log-sum-exp, on a fixed random subset of
    ``max_n`` rows when N is larger (deterministic through ``seed``). [N, d] -> float.
    """
    u = _unit(emb)
    if u.shape[0] > max_n:
        g = torch.Generator().manual_seed(seed)
        u = u[torch.randperm(u.shape[0], generator=g)[:max_n].to(u.device)]
    n = u.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    parts = []
    for i0 in range(0, n, _CHUNK):
        blk = u[i0:i0 + _CHUNK]
        # ||u_i - u_j||² = 2 − 2 u_i·u_j on the sphere; drop the i = j terms with −inf
        e = -t * (2.0 - 2.0 * blk @ u.T).clamp_min(0)
        idx = torch.arange(blk.shape[0], device=u.device)
        e[idx, idx + i0] = -math.inf
        parts.append(e.logsumexp(1))
    return float(torch.cat(parts).logsumexp(0) - math.log(n * (n - 1)))


def _ridge_fit_score(xb: Tensor, y: Tensor, train: Tensor, test: Tensor, n_cls: int,
                     ridge: float) -> int:
    """Fit a ridge classifier on rows ``train`` of ``xb`` [N, d+1]; the number right on ``test``."""
    a, b = xb[train], F.one_hot(y[train], n_cls).to(xb.dtype)
    reg = ridge * a.shape[0] * torch.eye(a.shape[1], dtype=xb.dtype, device=xb.device)
    reg[-1, -1] = 0  # the bias is not shrunk
    w = torch.linalg.solve(a.T @ a + reg, a.T @ b)
    return int(((xb[test] @ w).argmax(1) == y[test]).sum())


@torch.no_grad()
def linear_probe_accuracy(emb, labels, test_fraction: float = 0.3, seed: int = 0,
                          ridge: float = 1e-3, folds: int = 0) -> float:
    """Held-out accuracy of a linear probe on normalized embeddings.

    emb: [N, d]; labels: int [N]. The probe is a ridge-regression classifier (least squares
    onto one-hot targets with a bias, closed form in float64: deterministic, O(N·d² + d³)).
    ``folds`` = 0: one seeded split keeps ``test_fraction`` of the rows out. ``folds`` = k ≥ 2:
    k-fold cross-validation, so every row is scored once, held out (N test points, not
    N·test_fraction). -> float in [0, 1]; NaN when the embeddings hold NaN or inf.
    """
    x = _unit(emb).double()
    y = torch.as_tensor(labels, device=x.device).long().reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries for {x.shape[0]} embeddings")
    if not bool(torch.isfinite(x).all()):
        return math.nan  # NaN in, NaN out (the fit would quietly score a constant guess)
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).to(x.device)
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)
    n_cls = int(y.max()) + 1
    if folds >= 2:
        k = min(folds, n)
        parts = [perm[i::k] for i in range(k)]
        right = sum(_ridge_fit_score(xb, y, torch.cat(parts[:i] + parts[i + 1:]), parts[i],
                                     n_cls, ridge) for i in range(k))
        return right / n
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    test, train = perm[:n_test], perm[n_test:]
    return _ridge_fit_score(xb, y, train, test, n_cls, ridge) / n_test


def linear_separability(image_emb, text_emb, folds: int = 5, seed: int = 0) -> float:
    """Held-out accuracy of a linear probe telling image from text embeddings (0.5 = inseparable).

    [N, d], [M, d] -> float in [0, 1], scored by ``folds``-fold cross-validation over all N + M
    points (each held out once; see :func:`linear_probe_accuracy`).
    """
    x, y = _pair(image_emb, text_emb)
    labels = torch.cat([torch.zeros(x.shape[0]), torch.ones(y.shape[0])]).long()
    return linear_probe_accuracy(torch.cat([x, y]), labels, seed=seed, folds=folds)


@torch.no_grad()
def singular_values(emb, normalize: bool = True, center: bool = True) -> Tensor:
    """Singular values (descending, float64 [min(N, d)]) of the [N, d] embedding matrix.

    ``normalize`` L2-normalizes rows first (the default, as for every metric here); ``center``
    (the default) subtracts the mean row: the spread around the cone's axis. Uncentered, the
    largest singular value mostly measures the cone's mean direction.
    """
    x = _unit(emb).double() if normalize else torch.as_tensor(emb).detach().double()
    if not bool(torch.isfinite(x).all()):  # NaN in, NaN out (the SVD itself would raise)
        return torch.full((min(x.shape),), math.nan, dtype=x.dtype, device=x.device)
    if center:
        x = x - x.mean(0)
    return torch.linalg.svdvals(x)


def condition_number(emb, normalize: bool = True, center: bool = True) -> float:
    """σ_max / σ_min of the centered [N, d] embedding matrix (Ren & Li 2023); inf when
    rank-deficient, NaN when the embeddings hold NaN or inf.

    Caveat: centered, N rows span at most N − 1 directions, so with N ≤ d it is inf whatever the
    embeddings; and for N a few times d the smallest singular value of any sample matrix is small
    (Marchenko–Pastur), so it is inflated whatever the embeddings: see
    :func:`noise_condition_number` for the size of that floor (``summary`` reports ``n_over_d``).
    """
    s = singular_values(emb, normalize, center)
    if bool(s.isnan().any()):
        return math.nan
    n, d = torch.as_tensor(emb).shape
    tol = s[0] * max(n, d) * torch.finfo(s.dtype).eps  # numerically rank-deficient below this
    return float(s[0] / s[-1]) if s[-1] > tol else math.inf


def noise_condition_number(n: int, d: int, center: bool = True) -> float:
    """The condition number isotropic noise of shape [n, d] has, whatever a model learned.

    Marchenko–Pastur: the singular values of an m x d matrix of i.i.d. rows (m > d) fill
    [√m − √d, √m + √d] as m, d grow, so σ_max/σ_min → (1 + √(d/m)) / (1 − √(d/m)); m = n − 1
    when centered (the mean row takes one degree of freedom). inf when m ≤ d (rank-deficient).
    About 3 at n = 4d, 1.9 at n = 10d, 1.2 at n = 100d: a measured :func:`condition_number`
    near this floor says nothing about the embeddings.
    """
    m = n - 1 if center else n
    if m <= d:
        return math.inf
    r = math.sqrt(d / m)
    return (1 + r) / (1 - r)


def effective_rank(emb, normalize: bool = True, center: bool = True) -> float:
    """exp(entropy of σ/Σσ) (Roy & Vetterli 2007): d for a flat spectrum, 1 for rank one."""
    s = singular_values(emb, normalize, center)
    if bool(s.isnan().any()):
        return math.nan
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _pair_ids(ids, n: int, device, name: str = "ids") -> Tensor | None:
    """An integer tensor [n] of pair IDs (None stays None), or ValueError naming ``name``."""
    if ids is None:
        return None
    t = torch.as_tensor(ids, device=device)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer array, got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one ID per pair), got {tuple(t.shape)}")
    return t


@torch.no_grad()
def retrieval_recall(image_emb, text_emb, ks: Sequence[int] = (1, 5), ids=None,
                     labels=None) -> dict:
    """Image→text and text→image recall@k of paired embeddings (pair i is the match of i).

    The partners of query i are the candidates P_i = {j : ids_j = ids_i} (just i without
    ``ids``): pairs with one ID are the same thing (duplicates, several captions of one image),
    in both directions. Query i is a hit at k when fewer than k *non-partners* score at least
    as high as its best-scoring partner: ties between a partner and a non-partner count as
    misses (collapsed embeddings score 0, not 1), ties among partners do not matter. Without
    ``ids`` this is "fewer than k other candidates score at least as high as its partner".

    image_emb, text_emb: [N, d]; ids: integer [N] (tensor or array) or None; ``labels`` is the
    older name of ``ids`` (class labels make every same-class candidate a hit). Row blocks keep
    memory O(chunk·N). Returns {"i2t_r1", "i2t_r5", "t2i_r1", ...}, floats in [0, 1]; NaN
    when the embeddings hold NaN or inf.
    """
    x, y = _pair(image_emb, text_emb)
    if x.shape[0] != y.shape[0]:
        raise ValueError("retrieval_recall needs paired embeddings (same N)")
    if ids is not None and labels is not None:
        raise ValueError("give ids or labels (its older name), not both")
    pid = _pair_ids(ids if labels is None else labels, x.shape[0], x.device,
                    "ids" if labels is None else "labels")
    names = [f"{name}_r{k}" for name in ("i2t", "t2i") for k in ks]
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())):
        return {key: math.nan for key in names}  # NaN in, NaN out: no rank is meaningful
    n = x.shape[0]
    out = {}
    for name, q, c in (("i2t", x, y), ("t2i", y, x)):
        hits = {k: 0 for k in ks}
        for i0 in range(0, n, _CHUNK):
            sims = q[i0:i0 + _CHUNK] @ c.T
            rows = torch.arange(sims.shape[0], device=x.device)
            if pid is None:
                partner = torch.zeros_like(sims, dtype=torch.bool)
                partner[rows, rows + i0] = True
            else:
                partner = pid[i0:i0 + sims.shape[0]].unsqueeze(1) == pid.unsqueeze(0)
            best = sims.masked_fill(~partner, -math.inf).amax(1)
            # non-partners scoring >= the best partner: the rank it has at worst
            rank = ((sims >= best.unsqueeze(1)) & ~partner).sum(1)
            for k in ks:
                hits[k] += int((rank < k).sum())
        for k in ks:
            out[f"{name}_r{k}"] = hits[k] / n
    return out


@torch.no_grad()
def zero_shot_accuracy(image_emb, class_emb, labels) -> float:
    """Accuracy of argmax_k x̂_i·ĉ_k against ``labels``.

    image_emb: [N, d]; class_emb: [K, d], or [K, P, d] for P prompts per class (the normalized
    prompt embeddings are averaged and renormalized, CLIP's prompt ensembling); labels: int [N].
    """
    x = _unit(image_emb)
    c = torch.as_tensor(class_emb).detach().to(x.device, x.dtype)
    if c.dim() == 3:
        c = F.normalize(c, dim=2).mean(1)
    c = F.normalize(c, dim=1)
    y = torch.as_tensor(labels, device=x.device).reshape(-1)
    return float(((x @ c.T).argmax(1) == y).float().mean())


def summary(image_emb, text_emb, labels=None, class_emb=None, probe: bool = True,
            ids=None) -> dict:
    """Every metric that applies to paired embeddings [N, d] x [N, d], as {name: float}.

    Always: n, d, n_over_d, gap, cross_cosine, cone_image, cone_text, alignment,
    uniformity_image, uniformity_text, cond_image, cond_text (centered; inf when N <= d and
    inflated for N a few times d, see :func:`noise_condition_number`), erank_image, erank_text
    (centered), i2t_r1/r5, t2i_r1/r5 (ties are misses; with ``ids``, integer [N], any pair
    sharing the query's ID is a hit: see :func:`retrieval_recall`);
    ``probe``: separability (image-vs-text probe, 5-fold); with labels: class_probe (probe
    accuracy of the image embeddings on the labels, 5-fold); with labels and class_emb:
    zero_shot.
    """
    x, y = _pair(image_emb, text_emb)
    ids = _pair_ids(ids, x.shape[0], x.device)  # refused before any work
    out = {"n": float(x.shape[0]), "d": float(x.shape[1]), "n_over_d": x.shape[0] / x.shape[1],
           "gap": modality_gap(x, y), "cross_cosine": cross_cosine(x, y),
           "cone_image": cone_cosine(x), "cone_text": cone_cosine(y),
           "alignment": alignment(x, y),
           "uniformity_image": uniformity(x), "uniformity_text": uniformity(y),
           "cond_image": condition_number(x), "cond_text": condition_number(y),
           "erank_image": effective_rank(x), "erank_text": effective_rank(y)}
    out.update(retrieval_recall(x, y, ids=ids))
    if probe:
        out["separability"] = linear_separability(x, y)
        if labels is not None:
            out["class_probe"] = linear_probe_accuracy(x, labels, folds=5)
    if labels is not None and class_emb is not None:
        out["zero_shot"] = zero_shot_accuracy(x, class_emb, labels)
    return out

