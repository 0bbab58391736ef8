"""gapops.metrics on embeddings whose answers are known in closed form."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gapops import metrics as M


def _rand(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_identical_embeddings_have_no_gap_and_perfect_alignment():
    x = _rand(50, 8)
    assert M.modality_gap(x, x) == 0.0
    assert M.alignment(x, x) == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(M.gap_vector(x, x), torch.zeros(8))


def test_two_orthogonal_points_are_sqrt2_apart():
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert M.modality_gap(x, y) == pytest.approx(math.sqrt(2), rel=1e-6)
    assert M.alignment(x, y) == pytest.approx(2.0, rel=1e-6)
    assert M.cross_cosine(x, y) == pytest.approx(0.0, abs=1e-7)


def test_metrics_normalize_their_inputs():
    x, y = _rand(40, 6, 1), _rand(40, 6, 2)
    assert M.modality_gap(7.0 * x, 0.1 * y) == pytest.approx(M.modality_gap(x, y), rel=1e-5)
    assert M.cone_cosine(3.0 * x) == pytest.approx(M.cone_cosine(x), rel=1e-5, abs=1e-7)
    assert M.alignment(2 * x, y) == pytest.approx(M.alignment(x, y), rel=1e-5)


def test_gap_vector_is_the_difference_of_normalized_means():
    x, y = _rand(30, 5, 3) + 1, _rand(20, 5, 4)
    want = F.normalize(x, dim=1).mean(0) - F.normalize(y, dim=1).mean(0)
    torch.testing.assert_close(M.gap_vector(x, y), want)


def test_isotropic_gaussian_has_no_cone():
    x = _rand(4000, 64, 5)
    assert abs(M.cone_cosine(x)) < 0.01
    assert abs(M.cross_cosine(x, _rand(4000, 64, 6))) < 0.01


def test_cone_cosine_matches_the_pairwise_mean_and_is_one_for_a_ray():
    x = _rand(25, 4, 7) + 0.5
    u = F.normalize(x.double(), dim=1)
    sims = u @ u.T
    brute = (sims.sum() - sims.diagonal().sum()) / (25 * 24)
    assert M.cone_cosine(x) == pytest.approx(float(brute), rel=1e-5)
    assert M.cone_cosine(torch.ones(10, 3) * torch.tensor([1.0, 2.0, 3.0])) == \
        pytest.approx(1.0, rel=1e-6)


def test_cross_cosine_matches_the_all_pairs_mean():
    x, y = _rand(30, 6, 8) + 0.3, _rand(20, 6, 9)
    brute = (F.normalize(x, dim=1) @ F.normalize(y, dim=1).T).mean()
    assert M.cross_cosine(x, y) == pytest.approx(float(brute), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("chunk", [1024, 7])
def test_uniformity_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(M, "_CHUNK", chunk)  # also exercise the row-block path
    x = _rand(40, 5, 10)
    u = F.normalize(x.double(), dim=1)
    d2 = torch.cdist(u, u).pow(2)
    off = ~torch.eye(40, dtype=torch.bool)
    brute = torch.log(torch.exp(-2 * d2[off]).mean())
    assert M.uniformity(x) == pytest.approx(float(brute), rel=1e-5)


def test_uniformity_of_two_antipodal_points():
    # ||u - v||^2 = 4 -> log exp(-8) = -8
    assert M.uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)


def test_linear_separability_of_gapped_and_of_identical_modalities():
    x = _rand(300, 16, 11)
    assert M.linear_separability(x + 5.0, x - 5.0) == 1.0
    same = M.linear_separability(_rand(300, 16, 12), _rand(300, 16, 13))
    assert 0.3 < same < 0.7


def test_separability_scores_every_point_held_out(monkeypatch):
    seen = []
    real = M._ridge_fit_score

    def spy(xb, y, train, test, n_cls, ridge):
        seen.append((set(train.tolist()), set(test.tolist())))
        return real(xb, y, train, test, n_cls, ridge)

    monkeypatch.setattr(M, "_ridge_fit_score", spy)
    M.linear_separability(_rand(50, 4, 34), _rand(50, 4, 35))
    assert len(seen) == 5
    tested = set().union(*(te for _, te in seen))
    assert tested == set(range(100))  # all 2N points, each held out once
    assert all(not (tr & te) for tr, te in seen)


def test_linear_probe_reads_classes_off_separated_clusters():
    centers = torch.eye(4) * 10
    labels = torch.arange(200) % 4
    x = centers[labels] + 0.1 * _rand(200, 4, 14)
    assert M.linear_probe_accuracy(x, labels) == 1.0


def test_condition_number_and_effective_rank_of_a_diagonal_matrix_uncentered():
    d = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert M.condition_number(d, normalize=False, center=False) == pytest.approx(4.0)
    p = torch.tensor([1.0, 2.0, 3.0, 4.0]) / 10
    assert M.effective_rank(d, normalize=False, center=False) == pytest.approx(
        float(torch.exp(-(p * p.log()).sum())), rel=1e-6)
    # normalized rows of a diagonal matrix are the identity: flat spectrum
    assert M.condition_number(d, center=False) == pytest.approx(1.0)
    assert M.effective_rank(d, center=False) == pytest.approx(4.0)


def test_condition_number_after_normalization_counts_directions():
    # four rows along e1, one along e2 (any lengths): singular values 2 and 1
    x = torch.tensor([[3.0, 0], [1, 0], [2, 0], [5, 0], [0, 9]])
    assert M.condition_number(x, center=False) == pytest.approx(2.0)
    assert M.effective_rank(torch.ones(6, 3), center=False) == pytest.approx(1.0)
    assert M.condition_number(torch.ones(6, 3), center=False) > 1e6


def test_centered_condition_number_ignores_the_cones_axis():
    # a narrow cone: a common direction plus isotropic spread; only the spread is the shape
    axis = torch.zeros(8)
    axis[0] = 1.0
    x = 5.0 * axis + 0.3 * _rand(4000, 8, 30)
    raw = dict(normalize=False)
    assert M.condition_number(x, center=False, **raw) > 10.0  # the mean direction dominates
    assert M.condition_number(x, **raw) < 1.5  # centered (the default): isotropic spread
    assert M.effective_rank(x, **raw) > 7.5


def test_condition_number_is_inf_when_n_does_not_exceed_d():
    # centered, N rows span at most N - 1 directions: rank-deficient whenever N <= d
    assert M.condition_number(_rand(16, 32, 31)) == math.inf
    s = M.summary(_rand(16, 32, 31), _rand(16, 32, 32), probe=False)
    assert s["n_over_d"] == 0.5 and s["cond_image"] == math.inf


def test_retrieval_recall_perfect_and_deranged():
    x = _rand(64, 16, 15)
    r = M.retrieval_recall(x, x)
    assert r == {"i2t_r1": 1.0, "i2t_r5": 1.0, "t2i_r1": 1.0, "t2i_r5": 1.0}
    # text i is image i+1's embedding: the partner is never the best match
    wrong = M.retrieval_recall(x, x.roll(1, 0), ks=(1,))
    assert wrong["i2t_r1"] == 0.0 and wrong["t2i_r1"] == 0.0


def test_retrieval_counts_ties_as_misses():
    # collapsed embeddings: every candidate scores the same; no query can single out its partner
    collapsed = torch.ones(20, 4)
    r = M.retrieval_recall(collapsed, collapsed)
    assert r == {"i2t_r1": 0.0, "i2t_r5": 0.0, "t2i_r1": 0.0, "t2i_r5": 0.0}
    # two exact copies per query: the partner ties with one other candidate, a miss at 1, a
    # hit at 5
    x = _rand(10, 6, 33).repeat(2, 1)
    r = M.retrieval_recall(x, x)
    assert r["i2t_r1"] == 0.0 and r["i2t_r5"] == 1.0


def test_retrieval_recall_in_chunks_and_with_labels(monkeypatch):
    x = _rand(50, 8, 16)
    full = M.retrieval_recall(x, x + 0.5 * _rand(50, 8, 17))
    monkeypatch.setattr(M, "_CHUNK", 8)
    assert M.retrieval_recall(x, x + 0.5 * _rand(50, 8, 17)) == full
    labels = torch.zeros(50, dtype=torch.long)  # one class: every candidate is a hit
    assert M.retrieval_recall(x, x.roll(1, 0), labels=labels)["i2t_r1"] == 1.0


def test_zero_shot_accuracy_with_single_and_ensembled_prompts():
    centers = torch.eye(3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    images = centers[labels] + 0.05
    assert M.zero_shot_accuracy(images, centers, labels) == 1.0
    prompts = torch.stack([centers, 2 * centers], 1)  # [K, P=2, d]
    assert M.zero_shot_accuracy(images, prompts, labels) == 1.0
    assert M.zero_shot_accuracy(images, centers, (labels + 1) % 3) == 0.0


def test_summary_has_every_metric_that_applies_and_takes_numpy():
    x, y = _rand(60, 8, 18), _rand(60, 8, 19)
    s = M.summary(x.numpy(), y.numpy())
    for k in ("n", "d", "n_over_d", "gap", "cross_cosine", "cone_image", "cone_text", "alignment", "uniformity_image",
              "uniformity_text", "separability", "cond_image", "cond_text", "erank_image",
              "erank_text", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"):
        assert isinstance(s[k], float), k
    assert "zero_shot" not in s and "class_probe" not in s
    labels = np.arange(60) % 3
    s = M.summary(x, y, labels=labels, class_emb=torch.randn(3, 8))
    assert 0.0 <= s["zero_shot"] <= 1.0 and 0.0 <= s["class_probe"] <= 1.0
    assert s["gap"] == M.modality_gap(x, y)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        M.modality_gap(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError):
        M.modality_gap(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError):
        M.alignment(torch.randn(4, 3), torch.randn(5, 3))


# ---------------------------------------------------------------- the shift landscape

def test_shift_landscape_at_zero_is_the_plain_loss_and_one_matches_centroids():
    from gapops.metrics.shift import shift_landscape
    x, y = _rand(40, 8, 40) + 1.0, _rand(40, 8, 41) - 1.0
    land = shift_landscape(x, y, tau=0.1, lambdas=[0.0, 1.0], batch_size=20,
                           backend="reference")
    want = sum(float(F.cross_entropy(10 * a @ b.T, torch.arange(20)) / 2
                     + F.cross_entropy(10 * b @ a.T, torch.arange(20)) / 2)
               for a, b in ((F.normalize(x[:20], dim=1), F.normalize(y[:20], dim=1)),
                            (F.normalize(x[20:], dim=1), F.normalize(y[20:], dim=1)))) / 2
    assert land[0]["loss"] == pytest.approx(want, rel=1e-5)
    assert len(land[0]["batch_loss"]) == 2
    assert land[0]["gap"] == pytest.approx(M.modality_gap(x, y), rel=1e-5)
    assert land[1]["gap"] < 0.2 * land[0]["gap"]  # λ = 1 nearly closes it (renormalized)


# ---------------------------------------------------------------- retrieval with pair IDs

def _naive_recall(q, c, ids, k):
    """Recall@k by the documented rule, one query at a time in float64 (the oracle)."""
    sims = F.normalize(q.double(), dim=1) @ F.normalize(c.double(), dim=1).T
    hits = 0
    for i in range(q.shape[0]):
        partner = ids == ids[i]
        best = sims[i][partner].max()
        hits += int(int((sims[i][~partner] >= best).sum()) < k)
    return hits / q.shape[0]


def test_unique_ids_are_the_plain_recall():
    x, y = _rand(40, 6, 50), _rand(40, 6, 51)
    y = x + 0.8 * y
    plain = M.retrieval_recall(x, y)
    assert M.retrieval_recall(x, y, ids=torch.arange(40)) == plain
    assert M.retrieval_recall(x, y, ids=np.arange(40) * 7 - 3) == plain  # any distinct integers
    assert plain["i2t_r1"] not in (0.0, 1.0)  # the comparison can tell a difference


def test_several_captions_per_image_count_every_caption_as_a_hit():
    # 4 images, 3 captions each; rows are (image, caption) pairs, the image repeated per caption
    img = _rand(4, 8, 52)
    captions = img.repeat_interleave(3, 0) + 0.3 * _rand(12, 8, 53)
    images = img.repeat_interleave(3, 0)
    ids = torch.arange(4).repeat_interleave(3)
    plain = M.retrieval_recall(images, captions, ks=(1,))
    # text->image: the three copies of the right image tie, so without IDs every query misses;
    # image->text: a copy finds at most one "own" caption (the other two belong to other rows)
    assert plain["t2i_r1"] == 0.0 and plain["i2t_r1"] <= 1 / 3
    assert M.retrieval_recall(images, captions, ks=(1,), ids=ids) == {"i2t_r1": 1.0,
                                                                      "t2i_r1": 1.0}


def test_ids_keep_ties_with_non_partners_as_misses():
    collapsed = torch.ones(12, 4)
    groups = torch.arange(12) // 3  # 4 IDs of 3 pairs each, all scores equal
    r = M.retrieval_recall(collapsed, collapsed, ks=(1, 9, 10), ids=groups)
    # the best partner ties with the 9 non-partners: a miss until k = 10
    assert r == {"i2t_r1": 0.0, "i2t_r9": 0.0, "i2t_r10": 1.0,
                 "t2i_r1": 0.0, "t2i_r9": 0.0, "t2i_r10": 1.0}
    # one ID for everything: every candidate is a partner, nothing can outrank one
    one_id = torch.zeros(12, dtype=torch.long)
    assert M.retrieval_recall(collapsed, collapsed, ks=(1,), ids=one_id) == {"i2t_r1": 1.0,
                                                                             "t2i_r1": 1.0}


@pytest.mark.parametrize("n_ids", [1, 3, 17, 60])  # one group, many duplicates, few, none
def test_retrieval_with_ids_matches_the_naive_rule_in_chunks(monkeypatch, n_ids):
    g = torch.Generator().manual_seed(n_ids)
    # small integer coordinates: many exact ties between partners and non-partners
    x = torch.randint(-2, 3, (60, 3), generator=g).float() + 0.01
    y = torch.randint(-2, 3, (60, 3), generator=g).float() + 0.01
    ids = torch.randint(0, n_ids, (60,), generator=g)
    monkeypatch.setattr(M, "_CHUNK", 7)  # blocks that do not divide N
    r = M.retrieval_recall(x, y, ks=(1, 5), ids=ids)
    for k in (1, 5):
        assert r[f"i2t_r{k}"] == _naive_recall(x, y, ids, k)
        assert r[f"t2i_r{k}"] == _naive_recall(y, x, ids, k)


def test_labels_are_the_older_name_of_ids_and_bad_ids_are_refused():
    x, y = _rand(20, 4, 54), _rand(20, 4, 55)
    ids = torch.arange(20) % 6
    assert M.retrieval_recall(x, y, labels=ids) == M.retrieval_recall(x, y, ids=ids)
    with pytest.raises(ValueError, match="not both"):
        M.retrieval_recall(x, y, ids=ids, labels=ids)
    with pytest.raises(ValueError, match="ids must be an integer"):
        M.retrieval_recall(x, y, ids=torch.arange(20.0))
    with pytest.raises(ValueError, match=r"ids must have shape \[20\]"):
        M.retrieval_recall(x, y, ids=torch.arange(19))
    with pytest.raises(ValueError, match="ids"):
        M.summary(x, y, ids=torch.arange(21), probe=False)


def test_summary_reports_recall_with_ids():
    x, y = _rand(30, 5, 56), _rand(30, 5, 57)
    ids = torch.arange(30) // 2
    s = M.summary(x, y, ids=ids, probe=False)
    want = M.retrieval_recall(x, y, ids=ids)
    assert all(s[k] == v for k, v in want.items())
    assert s["gap"] == M.summary(x, y, probe=False)["gap"]


# ---------------------------------------------------------------- NaN, empty, the noise floor

def test_nan_in_nan_out_and_empty_is_refused():
    x, y = _rand(30, 5, 58), _rand(30, 5, 59)
    x[4, 2] = math.nan
    assert math.isnan(M.condition_number(x)) and math.isnan(M.effective_rank(x))
    assert all(math.isnan(v) for v in M.retrieval_recall(x, y).values())
    assert math.isnan(M.linear_separability(x, y))
    assert math.isnan(M.condition_number(y.masked_fill(y > 1, math.inf)))
    for empty in (torch.zeros(0, 5), torch.zeros(5, 0)):
        with pytest.raises(ValueError, match="empty"):
            M.condition_number(empty)


def test_noise_condition_number_is_what_isotropic_noise_measures():
    for n, d in ((800, 200), (2000, 100)):
        noise = M.condition_number(_rand(n, d, 60))
        assert noise == pytest.approx(M.noise_condition_number(n, d), rel=0.05)
    assert M.noise_condition_number(4 * 100 + 1, 100) == pytest.approx(3.0)  # 400 centered rows
    assert M.noise_condition_number(101, 100) == math.inf
    assert M.noise_condition_number(100, 100, center=False) == math.inf
    assert 1.0 < M.noise_condition_number(10**6, 10) < 1.01
