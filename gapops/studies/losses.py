"""The optional regularizers of STUDIES.md and the positives-only objective, in plain torch.

All take the batch's (unnormalized) embeddings [B, d] and return a 0-dim float32 loss. They
are small B×B terms next to the fused contrastive loss, which the loop always computes with
``gapops.contrastive_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def alignment_loss(image: Tensor, text: Tensor) -> Tensor:
    """Positive pairs only: E_i ||x̂_i − ŷ_i||² (Ren & Li's 'no negatives' objective)."""
    return (F.normalize(image, dim=1) - F.normalize(text, dim=1)).pow(2).sum(1).mean()


def imsep_loss(image: Tensor, text: Tensor, scale: Tensor, semantic: Tensor) -> Tensor:
    """AlignCLIP's intra-modality separation (Eslami & de Melo 2024), as its code computes it.

    For each modality, a softmax over row i's logits s·[δ_ij u_i·u_j for j ≠ i; x̂_i·ŷ_i at j = i]
    with target i: the pair's cross-modal similarity must beat the same-modality similarities,
    which are rescaled by the semantic distance δ_ij = 1 − cos(semantic_i, semantic_j) of the two
    captions (so near-synonymous samples are barely pushed apart). Returns the mean of the image
    and the text terms. semantic: [B, F] fixed caption features (AlignCLIP uses a frozen sentence
    encoder; we use the text inputs: bag-of-words counts or the text view's features).
    """
    x, y = F.normalize(image, dim=1), F.normalize(text, dim=1)
    sem = F.normalize(semantic.float(), dim=1)
    delta = 1.0 - sem @ sem.T
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    paired = (x * y).sum(1)
    target = torch.arange(x.shape[0], device=x.device)
    terms = []
    for u in (x, y):
        logits = torch.where(eye, paired.unsqueeze(1).expand_as(delta), (u @ u.T) * delta)
        terms.append(F.cross_entropy(scale * logits, target))
    return 0.5 * (terms[0] + terms[1])


def semantic_features(texts: Tensor) -> Tensor:
    """Fixed caption features for :func:`imsep_loss`: float text inputs as they are, token ids
    [B, L] as bag-of-words counts [B, V] (padding dropped)."""
    if texts.is_floating_point():
        return texts
    counts = F.one_hot(texts, int(texts.max()) + 1).sum(1).float()
    return counts[:, 1:]


def feature_separation_loss(shared: Tensor, private: Tensor) -> Tensor:
    """Jiang et al.'s deep feature separation, simplified: the modality-specific (private)
    embedding is kept orthogonal to the shared one, E_i (ŝ_i·p̂_i)², and spread out by a
    uniformity term on the private embeddings so that it keeps modality information rather
    than collapsing."""
    s, p = F.normalize(shared, dim=1), F.normalize(private, dim=1)
    ortho = (s * p).sum(1).pow(2).mean()
    sq = torch.cdist(p, p).pow(2)
    n = p.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=p.device)
    uniform = torch.logsumexp(-2.0 * sq[off], 0) - torch.log(torch.tensor(float(n * (n - 1))))
    return ortho + 0.1 * uniform


def bridge_loss(mid: Tensor, image: Tensor, text: Tensor, scale: float = 10.0) -> Tensor:
    """Jiang et al.'s Brownian-bridge loss at t = 1/2: the embedding of an augmented view of
    image i should sit near the midpoint of its pair's bridge, normalize((x̂_i + ŷ_i)/2), and
    not near the other pairs' midpoints (an InfoNCE over the batch's midpoints)."""
    m = F.normalize(F.normalize(image, dim=1) + F.normalize(text, dim=1), dim=1)
    z = F.normalize(mid, dim=1)
    return F.cross_entropy(scale * z @ m.T, torch.arange(z.shape[0], device=z.device))


def geometric_loss(image: Tensor, text: Tensor) -> Tensor:
    """Jiang et al.'s geometric consistency: the two modalities' similarity structures agree,
    mean (x̂_i·x̂_j − ŷ_i·ŷ_j)² + mean (x̂_i·ŷ_j − x̂_j·ŷ_i)²."""
    x, y = F.normalize(image, dim=1), F.normalize(text, dim=1)
    c = x @ y.T
    return (x @ x.T - y @ y.T).pow(2).mean() + (c - c.T).pow(2).mean()
