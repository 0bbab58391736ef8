"""The optional regularizers of docs/studies.md and the positives-only objective, in plain torch.

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


def info_nce(a: Tensor, b: Tensor, tau: float = 0.1) -> Tensor:
    """One-directional InfoNCE of row i of a [B, d] against row i of b [B, d] (normalized),
    the batch's other rows being negatives (SimCLR's loss at temperature ``tau``)."""
    za, zb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return F.cross_entropy(za @ zb.T / tau, torch.arange(a.shape[0], device=a.device))


def feature_separation_loss(shared: Tensor, private: Tensor, private_view: Tensor,
                            tau: float = 0.1) -> Tensor:
    """Jiang et al.'s deep feature separation (arXiv 2303.05952) for one modality.

    The modality's independent (private) features are kept apart from the shared ones by an
    orthogonality constraint, E_i (ŝ_i·p̂_i)², and keep their own information by their own
    contrastive term: an InfoNCE between the private features of two augmented views of the
    same inputs (``private`` and ``private_view``, [B, d] each). shared: [B, d].
    """
    s, p = F.normalize(shared, dim=1), F.normalize(private, dim=1)
    ortho = (s * p).sum(1).pow(2).mean()
    return ortho + info_nce(private, private_view, tau)


def bridge_loss(mid: Tensor, image: Tensor, text: Tensor, t: Tensor) -> Tensor:
    """Jiang et al.'s Brownian-bridge loss (our reading, see docs/studies.md): an augmented view of image i, taken as
    the bridge's state at time t_i, should be likely under the Brownian bridge from x̂_i to ŷ_i,
    N((1 − t)x̂_i + t ŷ_i, t(1 − t) I), against the other pairs' bridges at the same t_i:
    cross-entropy over j of −||ẑ_i − ((1 − t_i)x̂_j + t_i ŷ_j)||² / (2 t_i (1 − t_i)).

    mid, image, text: [B, d] (normalized here); t: [B] in (0, 1).
    """
    x, y, z = F.normalize(image, dim=1), F.normalize(text, dim=1), F.normalize(mid, dim=1)
    tt = t.unsqueeze(1)  # [B, 1]
    # bridges[i, j] = (1 - t_i) x_j + t_i y_j: ||z_i - m_ij||² expanded without a [B, B, d] tensor
    zx, zy, xy = z @ x.T, z @ y.T, (x * y).sum(1).unsqueeze(0)
    m2 = (1 - tt) ** 2 + tt ** 2 + 2 * tt * (1 - tt) * xy  # ||m_ij||² (x̂, ŷ unit)
    d2 = 1.0 - 2 * ((1 - tt) * zx + tt * zy) + m2
    logits = -d2 / (2 * tt * (1 - tt))
    return F.cross_entropy(logits, torch.arange(x.shape[0], device=x.device))


def geometric_loss(image: Tensor, text: Tensor, in_weight: float = 0.25,
                   cross_weight: float = 0.25) -> Tensor:
    """Geometric consistency (Jiang et al.), scaled as CyCLIP's released code does:
    in-modal Σ_jk (x̂_j·x̂_k − ŷ_j·ŷ_k)² / B and cross-modal Σ_jk (x̂_j·ŷ_k − x̂_k·ŷ_j)² / B, i.e.
    per sample, not per pair (B times the mean), weighted 0.25 each (CyCLIP's λ1 = λ2 = 0.25).
    image, text: [B, d]."""
    x, y = F.normalize(image, dim=1), F.normalize(text, dim=1)
    b = x.shape[0]
    c = x @ y.T
    return (in_weight * (x @ x.T - y @ y.T).pow(2).sum() + cross_weight * (c - c.T).pow(2).sum()) / b


def sigmoid_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor,
                 **kw) -> Tensor:
    """``gapops.sigmoid_loss`` (SigLIP's pairwise sigmoid loss).

    image, text: [B, d] (normalized by the op); logit_scale: 0-dim multiplier s; logit_bias:
    0-dim b. Value: (1/B) Σ_ij softplus(−l_ij (s·cos_ij + b)), l = +1 on the diagonal, −1 off it
    (open_clip's SigLipLoss). ``kw`` goes to the op (backend=, deterministic=).
    """
    import gapops
    return gapops.sigmoid_loss(image, text, logit_scale, logit_bias, **kw)
