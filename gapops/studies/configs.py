"""The studies of docs/studies.md as named configurations, each with the check of its claim.

A check reads the arms (with their per-seed results) and returns (reproduced, verdict,
comparisons): each comparison is a paired difference between arms over seeds with its 95%
confidence interval (:mod:`gapops.studies.stats`), and a claim counts as reproduced only when
every interval it needs excludes zero in the paper's direction.
"""
from __future__ import annotations

import math
import statistics

from . import stats
from .registry import Arm, Study

LIANG = "Liang et al. 2022, Mind the Gap (arXiv 2203.02053)"
YARAS = "Yaras et al. 2024, Explaining and Mitigating the Modality Gap (arXiv 2412.07909v2)"
ALIGNCLIP = "Eslami & de Melo 2024, AlignCLIP (arXiv 2406.17639)"
REN_LI = "Ren & Li 2023, On the Importance of Contrastive Loss in Multimodal Learning " \
         "(arXiv 2304.03717)"
JIANG = "Jiang et al. CVPR 2023, Understanding and Constructing Latent Modality Structures " \
        "(arXiv 2303.05952)"


def _arm(arms, name):
    return next(a for a in arms if a["name"] == name)


def _v(arms, name, metric):
    """[per-seed final value] of ``metric`` in arm ``name``."""
    return [r["final"][metric] for r in _arm(arms, name)["per_seed"]]


def _recall(arms, name):
    return [0.5 * (r["final"]["i2t_r1"] + r["final"]["t2i_r1"])
            for r in _arm(arms, name)["per_seed"]]


def _verdict(comps: list, extra: str = "") -> tuple:
    """(outcome, text, comps): the outcome of the required comparisons ``comps``; ``extra``
    reports what is measured but not required."""
    text = "; ".join(f"{stats.mark(c)} {stats.describe(c)}" for c in comps)
    return stats.overall(comps), text + (f". {extra}" if extra else ""), comps


def _context(comps: list) -> str:
    """Comparisons reported but not required, as text."""
    return "not required: " + "; ".join(f"{stats.mark(c)} {stats.describe(c)}" for c in comps)


def _check_cone(arms):
    shallow, deep = arms[0]["name"], arms[-1]["name"]
    min_gap = [min(g) for g in zip(*(_v(arms, a["name"], "gap") for a in arms))]
    return _verdict([
        stats.paired(f"cone {deep} − {shallow}", _v(arms, deep, "cone_image"),
                     _v(arms, shallow, "cone_image")),
        stats.at_least(f"cone on random inputs ({deep})", _v(arms, deep, "cone_random"), 0.2),
        stats.at_least("gap at init (smallest over depths)", min_gap, 0.3)])


_FOLD = "disjoint fold of 100 pairs"


def _check_init_gap(arms):
    comps = [stats.at_least(f"gap {a['name']}", _v(arms, a["name"], "gap"), 0.3, unit=_FOLD)
             for a in arms]
    return _verdict(comps, "Liang et al. Fig. 1: CLIP 0.82 on MSCOCO; a gap at random init too")


# Yaras et al.'s FLT sweep (as reported): fixed τ, gap, image retrieval (%), linear probe (%)
FLT_TAUS = (0.01, 0.02, 0.04, 0.07, 0.1, 0.2, 0.4)
FLT_GAP = (0.669, 0.334, 0.122, 0.033, 0.019, 0.008, 0.009)
FLT_RETRIEVAL = (69.9, 70.5, 73.4, 75.5, 66.6, 24.0, 6.9)
FLT_PROBE = (69.4, 38.0)  # at τ = 0.01 and τ = 0.4
FLT_SLOPE = stats.slope([math.log(t) for t in FLT_TAUS], FLT_GAP)


def _check_temperature(arms):
    names = [a["name"] for a in arms]
    logt = [math.log(a["params"]["tau"]) for a in arms]
    per_seed = list(zip(*(_v(arms, n, "gap") for n in names)))  # [seed][arm]
    slopes = [stats.slope(logt, gaps) for gaps in per_seed]
    top, lo, hi = "tau=0.07", names[0], names[-1]
    comps = [
        stats.at_least("slope of gap against log τ, negated", [-x for x in slopes], 0.0,
                       paper=-FLT_SLOPE),
        stats.paired(f"image retrieval (t2i R@1) {top} − {lo}", _v(arms, top, "t2i_r1"),
                     _v(arms, lo, "t2i_r1"), paper=(FLT_RETRIEVAL[3] - FLT_RETRIEVAL[0]) / 100),
        stats.paired(f"image retrieval (t2i R@1) {top} − {hi}", _v(arms, top, "t2i_r1"),
                     _v(arms, hi, "t2i_r1"), paper=(FLT_RETRIEVAL[3] - FLT_RETRIEVAL[-1]) / 100),
        stats.paired(f"probe {hi} − {lo}", _v(arms, hi, "class_probe"),
                     _v(arms, lo, "class_probe"), "<",
                     paper=(FLT_PROBE[1] - FLT_PROBE[0]) / 100)]
    curve = ", ".join(f"{a['name']} {a['final']['t2i_r1']:.3f}" for a in arms)
    peak = max(arms, key=lambda a: a["final"]["t2i_r1"])["name"]
    slope_end = ", ".join(f"{a['name']} {a['final']['gap_slope']:+.4f}" for a in arms)
    return _verdict(comps, f"image retrieval by τ: {curve} (peak at {peak}; paper's at "
                           f"tau=0.07); gap slope per epoch at the end: {slope_end}")


def _check_shift(arms):
    lo, hi = arms[0], arms[-1]
    mins = [a["final"]["argmin_lambda"] for a in arms]  # of the seed-averaged landscapes
    monotone = all(b >= a for a, b in zip(mins, mins[1:]))
    at0, far = mins[0] == 0.0, mins[-1] >= 0.8
    spread = [r["final"]["argmin_lambda"] for r in lo["per_seed"]]
    b_lo, b_hi = lo["batches"], hi["batches"]
    unit = "disjoint batch of 50 pairs"
    comps = [stats.paired(f"{lo['name']}: loss(λ=1) − loss(λ=0)", b_lo["loss_at_1"],
                          b_lo["loss_at_0"], unit=unit),
             stats.paired(f"{hi['name']}: loss(λ=0) − loss(λ=1)", b_hi["loss_at_0"],
                          b_hi["loss_at_1"], unit=unit)]
    outcome, text, comps = _verdict(comps)
    line = ", ".join(f"{a['name']} {m:+.1f}" for a, m in zip(arms, mins))
    checks = (f"argmin λ {line} (= 0 at the lowest τ: {at0}, over reshuffled batchings, "
              f"not replicates: {min(spread):+.1f}..{max(spread):+.1f}; non-decreasing in τ: "
              f"{monotone}; ≥ 0.8 at the highest: {far})")
    if not (at0 and monotone and far):
        outcome = "contradicted"
    return outcome, f"{checks}; {text}", comps


def _check_shift_toy(arms):
    a = arms[0]
    traj = [h["gap"] for h in a["history"]]
    line = ", ".join(f"{x['name']} {x['final']['argmin_lambda']:+.2f}" for x in arms)
    return "inconclusive", (f"example, not a reproduction: argmin λ {line}; gap {traj[0]:.3f} at "
                            f"init -> {traj[-1]:.3f} after {len(traj) - 1} epochs, still moving "
                            f"{a['final']['gap_slope']:+.4f}/epoch"), []


def _check_mismatch(arms):
    def steps(prefix):
        names = [a["name"] for a in arms if a["name"].startswith(prefix)]
        return [stats.paired(f"gap {b} − {a}", _v(arms, b, "gap"), _v(arms, a, "gap"))
                for a, b in zip(names, names[1:])]
    taus = ", ".join(f"{a['name']} {a['final']['tau']:.4f}" for a in arms
                     if a["name"].startswith("learnable"))
    return _verdict(steps("learnable"),
                    f"final τ: {taus}. Ours, fixed τ = 0.03 (" + _context(steps("fixed")) + ")")


YARAS_BASE = 0.294  # their baseline's gap (learnable τ)


def _check_schedule(arms):
    base = "learnable (baseline)"
    paper = {"TS S3 0.01->0.05": 0.088, "TR softplus": 0.284, "SLRT lr x0.1": 0.268}
    comps = [stats.paired(f"gap {n} − baseline", _v(arms, n, "gap"), _v(arms, base, "gap"), "<",
                          paper=g - YARAS_BASE) for n, g in paper.items()]
    rest = [stats.paired(f"gap {a['name']} − baseline", _v(arms, a["name"], "gap"),
                         _v(arms, base, "gap"), "<")
            for a in arms if a["name"].startswith("TS") and a["name"] not in paper]
    rest.append(stats.paired("recall@1 TS S3 − baseline", _recall(arms, "TS S3 0.01->0.05"),
                             _recall(arms, base)))
    taus = ", ".join(f"{a['name']} {a['final']['tau']:.4f}" for a in arms
                     if a["params"].get("temperature", "learnable") == "learnable")
    return _verdict(comps, _context(rest) + f". Final τ of the learnable arms: {taus}")


def _check_swap(arms):
    base, hard1 = "none", "HS p=1"
    paper = {"HS p=0.05": 0.225, "SS p=0.05": 0.139, hard1: 0.028}
    comps = [stats.paired(f"gap {n} − {base}", _v(arms, n, "gap"), _v(arms, base, "gap"), "<",
                          paper=g - YARAS_BASE) for n, g in paper.items()]
    comps += [stats.paired(f"probe {hard1} − {base}", _v(arms, hard1, "class_probe"),
                           _v(arms, base, "class_probe"), "<"),
              stats.paired(f"recall@1 {hard1} − {base}", _recall(arms, hard1),
                           _recall(arms, base), "<")]
    rows = ", ".join(f"{a['name']} gap {a['final']['gap']:.3f} probe "
                     f"{a['final']['class_probe']:.3f} R@1 "
                     f"{0.5 * (a['final']['i2t_r1'] + a['final']['t2i_r1']):.3f}" for a in arms)
    return _verdict(comps, f"by arm: {rows}")


def _check_shared(arms):
    return _verdict([
        stats.paired("gap shared − separate", _v(arms, "shared", "gap"),
                     _v(arms, "separate", "gap"), "<"),
        stats.paired("gap shared+imsep − shared", _v(arms, "shared+imsep", "gap"),
                     _v(arms, "shared", "gap"), "<"),
        stats.at_least("zero-shot shared+imsep − separate (kept: > −0.02)",
                       [a - b for a, b in zip(_v(arms, "shared+imsep", "zero_shot"),
                                              _v(arms, "separate", "zero_shot"))], -0.02)])


# The epoch the condition study reads "the rise" at, fixed before the version-3 run: version
# 2's seed-mean curve peaked there (so it is not blind to that run, but it is the same for
# every seed and never the per-seed peak).
RISE_EPOCH = 2


def _check_condition(arms):
    def curves(name):
        return [[h["cond_image"] for h in r["history"]] for r in _arm(arms, name)["per_seed"]]
    c, a = curves("contrastive"), curves("positives only")
    e = min(RISE_EPOCH, len(c[0]) - 1)
    rise = [math.log(x[e] / x[0]) for x in c]
    fall = [math.log(x[e] / x[-1]) for x in c]
    return _verdict([
        stats.at_least(f"contrastive: log(cond at epoch {e} / start)", rise, 0.0),
        stats.at_least(f"contrastive: log(cond at epoch {e} / end)", fall, 0.0),
        stats.paired("log cond at the end: positives only − contrastive",
                     [math.log(x[-1]) for x in a], [math.log(x[-1]) for x in c])])


def _check_structure(arms):
    base, ctrl, sep = "baseline", "private heads, no loss", "+separation"

    def probe(x, y):
        return stats.paired(f"probe {x} − {y}", _v(arms, x, "probe_image"),
                            _v(arms, y, "probe_image"))
    comps = [probe(sep, ctrl), probe("+bridge", base), probe("+geometric", base)]
    zs = [stats.paired(f"zero-shot {a['name']} − {base}", _v(arms, a["name"], "zero_shot"),
                       _v(arms, base, "zero_shot")) for a in arms[1:]]
    return _verdict(comps, "the dimension-matched control: " + _context([probe(ctrl, base)] + zs))


def gap_change(arm: dict) -> list:
    """Per replicate: the gap after the first epoch minus the gap at init."""
    return [r["history"][1]["gap"] - r["history"][0]["gap"] for r in arm["per_seed"]]


def _check_early(arms):
    steps = arms[0]["per_seed"][0]["history"][1]["step"]

    def comp(a):
        return stats.at_least(f"{a['name']}: gap change over the first {steps} steps",
                              gap_change(a), 0.0, paper=0.15, unit="random init")
    start = ", ".join(f"{a['name']} {statistics.fmean(r['history'][0]['gap'] for r in a['per_seed']):.3f}"
                      for a in arms)
    return _verdict([comp(arms[0])], f"{_context([comp(a) for a in arms[1:]])}; gap at init: "
                                      f"{start}")


def closing_fit(history: list, x_of=lambda t: -1.0 / math.log(t) ** 2) -> dict:
    """Straight-line fit of the gap against x(t) (default −1/log(t)², Theorem 3.2) over the
    history entries after step 1 (t = the step count)."""
    pts = [(x_of(h["step"]), h["gap"]) for h in history if h.get("step", 0) > 1]
    return stats.line_fit([p[0] for p in pts], [p[1] for p in pts])


def _check_closing(arms):
    runs = arms[0]["per_seed"]
    fits = [closing_fit(r["history"]) for r in runs]
    alt = [closing_fit(r["history"], math.log)["r2"] for r in runs]
    tau = arms[0]["final"]["tau"]
    return _verdict([
        stats.at_least("R² of gap against −1/log(t)² (ours: > 0.9)", [f["r2"] for f in fits], 0.9),
        stats.at_least("slope of gap against −1/log(t)², negated", [-f["slope"] for f in fits],
                       0.0)],
        f"context: R² against log t {statistics.fmean(alt):.3f}; learnable τ 0.07 -> {tau:.4f}")


def _check_sigmoid(arms):
    soft, sig = arms[0]["name"], arms[1]["name"]
    ctx = [stats.paired(f"gap {sig} − {soft}", _v(arms, sig, "gap"), _v(arms, soft, "gap")),
           stats.paired(f"recall@1 {sig} − {soft}", _recall(arms, sig), _recall(arms, soft))]
    end = arms[1]["final"]
    return _verdict([stats.at_least(f"gap {sig} (ours: open means > 0.05)", _v(arms, sig, "gap"),
                                    0.05)],
                    _context(ctx) + f"; sigmoid: final τ {end['tau']:.4f}, bias "
                    f"{end['bias']:+.2f}; softmax: final τ {arms[0]['final']['tau']:.4f}")


# CLIP: τ learnable from 0.07, at the base learning rate
_CLIP_TAU_KW = {"temperature": "learnable", "scale_lr_mult": 1.0}

_HS = {"swap_mode": "hard", "swap_p": 0.5}  # on a swap step each entry with probability 0.5
_SS = {"swap_mode": "soft", "swap_p": 1.0}  # on a swap step every entry mixes, λ ~ U(0, 1)
OURS = "ours (no paper ran it)"

STUDIES = [
    Study("cone", LIANG,
          "randomly initialized encoders map inputs into a narrow cone that narrows with depth; "
          "two towers start in different cones, so the gap exists at initialization",
          "synthetic", [Arm(f"depth={d}", model={"depth": d}) for d in (1, 2, 4, 8)],
          _check_cone, kind="cone", key="cone_image", bars=("cone_image", "cone_random", "gap")),
    Study("init_gap", LIANG,
          "real pretrained models have a modality gap (CLIP: 0.82 on MSCOCO), and so do the same "
          "architectures at random init (their Figure 1)",
          "embeddings", [Arm(n, data={"model": n}) for n in
                         ("clip", "clip_random", "convirt", "convirt_random")],
          _check_init_gap, kind="embeddings", bars=("gap", "cone_image", "cone_text"),
          replicates={"tiny": 2, "quick": 5, "full": 5}, unit="disjoint fold"),
    Study("temperature", YARAS,
          "FLT: at fixed tau the gap falls as tau grows (0.669 at 0.01 to 0.009 at 0.4) while "
          "image retrieval rises then collapses (an inverted U, peak at 0.07) and the linear "
          "probe falls",
          "synthetic",
          [Arm(f"tau={t:g}", train={"temperature": "fixed", "tau": t}) for t in FLT_TAUS],
          _check_temperature, bars=("gap", "t2i_r1", "class_probe"),
          sizes={"quick": {"train": {"epochs": 12}}}),
    Study("shift", LIANG,
          "shifting pretrained CLIP embeddings along the gap (held-out MSCOCO pairs, batch 50): "
          "at CLIP's tau = 1/100 the loss is lowest at the current gap (lambda = 0); as tau "
          "grows the minimum moves toward closing it (lambda = 1)",
          "embeddings",
          [Arm(f"tau={t:g}", train={"eval_tau": t}) for t in (0.01, 0.02, 0.05, 0.1, 1.0)],
          _check_shift, kind="real_shift", bars=("argmin_lambda",),
          data_kw={"model": "clip", "batch_size": 50}),
    Study("shift_toy", LIANG,
          "example (not a reproduction): the same shift on a toy model trained from scratch at "
          "tau = 0.01, whose gap is still closing",
          "synthetic",
          [Arm(f"tau={t:g}", train={"eval_tau": t}) for t in (0.01, 0.1, 1.0)],
          _check_shift_toy, kind="shift", bars=("argmin_lambda", "loss_shift_min"),
          train={"temperature": "fixed", "tau": 0.01},
          sizes={"quick": {"train": {"epochs": 20}}}, example=True),
    Study("mismatch", YARAS,
          "with a learnable tau (their mechanism: the mismatch and tau are coupled) the final "
          "gap grows with the fraction of mismatched pairs",
          "synthetic",
          [Arm(f"learnable, mismatch={f:g}", train={**_CLIP_TAU_KW, "mismatch": f})
           for f in (0.0, 0.1, 0.3)]
          + [Arm(f"fixed 0.03, mismatch={f:g}", train={"temperature": "fixed", "tau": 0.03,
                                                       "mismatch": f}) for f in (0.0, 0.1, 0.3)],
          _check_mismatch, bars=("gap", "i2t_r1", "tau")),
    Study("schedule", YARAS,
          "temperature control against a learnable tau (gap 0.294): TS, tau rising linearly "
          "from 0.01 to 0.02-0.05 (S0-S3; S3 best, 0.088); TR, 1/tau = softplus(nu) (0.284); "
          "SLRT, x0.1 learning rate on nu (0.268)",
          "synthetic",
          [Arm("learnable (baseline)", train=_CLIP_TAU_KW)]
          + [Arm(f"TS S{i} 0.01->{e:g}", train={"temperature": "schedule", "tau": 0.01,
                                                 "tau_end": e, "schedule": "linear_tau"})
             for i, e in enumerate((0.02, 0.03, 0.04, 0.05))]
          + [Arm("TR softplus", train={**_CLIP_TAU_KW, "scale_param": "softplus"}),
             Arm("SLRT lr x0.1", train={**_CLIP_TAU_KW, "scale_lr_mult": 0.1})],
          _check_schedule, bars=("gap", "i2t_r1", "tau")),
    Study("swap", YARAS,
          "modality swapping on a random p-fraction of training steps, learnable tau: hard "
          "(HS, each entry exchanged with probability 0.5) and soft (SS, each entry mixed "
          "lambda*x + (1-lambda)*y, lambda ~ U(0, 1)) shrink the gap at small p; p = 1 closes "
          "it but hurts the probe and retrieval",
          "synthetic",
          [Arm("none")]
          + [Arm(f"HS p={p:g}", train={**_HS, "swap_steps": p}) for p in (0.05, 0.2, 1.0)]
          + [Arm(f"SS p={p:g}", train={**_SS, "swap_steps": p}) for p in (0.05, 0.2, 1.0)],
          _check_swap, bars=("gap", "class_probe", "i2t_r1"), train=_CLIP_TAU_KW),
    Study("shared", ALIGNCLIP,
          "a shared encoder (SharedCLIP) has a smaller gap than separate towers; with the "
          "intra-modality separation loss (IMSep) the smallest, zero-shot accuracy kept",
          "digits",
          [Arm("separate", model={"kind": "towers"}), Arm("shared", model={"kind": "shared"}),
           Arm("shared+imsep", model={"kind": "shared"}, train={"imsep": 0.5})],
          _check_shared, bars=("gap", "zero_shot"), train=_CLIP_TAU_KW),
    Study("condition", REN_LI,
          "with linear encoders on ill-conditioned data, positive pairs first raise the "
          "condition number of the representation and negatives bring it back down; positives "
          "alone leave it high",
          "synthetic",
          [Arm("contrastive", train={"objective": "clip"}),
           Arm("positives only", train={"objective": "align"})],
          _check_condition, key="cond_image", bars=("cond_image", "erank_image"), log_key=True,
          model={"kind": "linear", "embed_dim": 8, "init_std": 0.01},
          data_kw={"nonlinear": False, "cond": 30.0},
          train={"temperature": "fixed", "tau": 0.1}),
    Study("structure", JIANG,
          "on data with an information gap, regularizing the latent modality structure (deep "
          "feature separation, Brownian bridge, geometric consistency) improves a linear probe "
          "on image embeddings; exact alignment is not optimal",
          "info_gap",
          [Arm("baseline"), Arm("private heads, no loss", model={"private": True}),
           Arm("+separation", model={"private": True}, train={"dfs": 0.5}),
           Arm("+bridge", train={"bridge": 0.5}), Arm("+geometric", train={"geo": 1.0})],
          _check_structure, bars=("probe_image", "zero_shot", "gap"),
          train={**_CLIP_TAU_KW, "augment": 0.3}),
    Study("early_growth", YARAS,
          "Theorem 3.3: from a random initialization the gap grows at the start of training "
          "(change over the first 10 steps across 100 random inits: mean about +0.15)",
          "synthetic",
          # the theorem's premise is a uniform random init (centroids near 0, no gap yet): our
          # MLP towers start in a cone with a gap of ~1, linear encoders of centred data near 0
          [Arm("linear encoders", model={"kind": "linear", "init_std": 0.1}),
           Arm("MLP towers")], _check_early, kind="early",
          train={**_CLIP_TAU_KW, "epochs": 1, "probe": False},
          replicates={"tiny": 6, "quick": 100, "full": 100}, unit="random init"),
    Study("closing_rate", YARAS,
          "Theorem 3.2: with a learnable tau the gap closes no faster than 1/log(t)^2; the gap "
          "against -1/log(t)^2 is close to a straight line",
          "synthetic", [Arm("learnable tau")], _check_closing, kind="closing",
          bars=("gap", "tau"), train={**_CLIP_TAU_KW, "probe": False},
          sizes={"quick": {"train": {"epochs": 20}}}),
    Study("sigmoid", OURS,
          "the sigmoid (SigLIP) loss, learnable scale and bias from open_clip's init (log 10, "
          "-10), on the same towers and data as the softmax loss, also leaves a modality gap",
          "synthetic",
          [Arm("softmax (CLIP)"),
           Arm("sigmoid (SigLIP)", model={"init_tau": 0.1, "init_bias": -10.0},
               train={"objective": "sigmoid"})],
          _check_sigmoid, bars=("gap", "i2t_r1", "tau", "bias"), train=_CLIP_TAU_KW),
]

BY_NAME = {s.name: s for s in STUDIES}
