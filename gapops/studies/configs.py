"""The studies of docs/studies.md as named configurations, each with the check of its claim.

A check reads the arms (with their per-seed results) and returns (reproduced, verdict,
comparisons): each comparison is a paired difference between arms over seeds with its 95%
confidence interval (:mod:`gapops.studies.stats`), and a claim counts as reproduced only when
every interval it needs excludes zero in the paper's direction.
"""
from __future__ import annotations

import math

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
    ok = bool(comps) and all(c["holds"] for c in comps)
    text = "; ".join(("✓ " if c["holds"] else "✗ ") + stats.describe(c) for c in comps)
    return ok, text + (f". {extra}" if extra else ""), comps


def _check_cone(arms):
    shallow, deep = arms[0]["name"], arms[-1]["name"]
    min_gap = [min(g) for g in zip(*(_v(arms, a["name"], "gap") for a in arms))]
    return _verdict([
        stats.paired(f"cone {deep} − {shallow}", _v(arms, deep, "cone_image"),
                     _v(arms, shallow, "cone_image")),
        stats.at_least(f"cone on random inputs ({deep})", _v(arms, deep, "cone_random"), 0.2),
        stats.at_least("gap at init (smallest over depths)", min_gap, 0.3)])


def _check_init_gap(arms):
    comps = [stats.at_least(f"gap {a['name']}", _v(arms, a["name"], "gap"), 0.3) for a in arms]
    return _verdict(comps, "Liang et al. Fig. 1: CLIP 0.82 on MSCOCO; a gap at random init too")


def _check_temperature(arms):
    taus = [a["name"] for a in arms if a["name"].startswith("tau=")]  # high τ -> low τ
    comps = [stats.paired(f"gap {lo} − {hi}", _v(arms, lo, "gap"), _v(arms, hi, "gap"))
             for hi, lo in zip(taus, taus[1:])]
    comps.append(stats.at_least("learnable: 0.07 − final tau", [0.07 - t for t in
                                                               _v(arms, "learnable", "tau")], 0.0))
    comps.append(stats.paired(f"gap learnable − {taus[0]}", _v(arms, "learnable", "gap"),
                              _v(arms, taus[0], "gap")))
    slopes = ", ".join(f"{a['name']} {a['final']['gap_slope']:+.4f}" for a in arms)
    return _verdict(comps, f"gap slope per epoch at the end: {slopes}")


def _check_shift(arms):
    lo, hi = arms[0], arms[-1]
    mins = [a["final"]["argmin_lambda"] for a in arms]  # of the seed-averaged landscapes
    monotone = all(b >= a for a, b in zip(mins, mins[1:]))
    at0, far = mins[0] == 0.0, mins[-1] >= 0.8
    spread = [r["final"]["argmin_lambda"] for r in lo["per_seed"]]
    b_lo, b_hi = lo["batches"], hi["batches"]
    comps = [stats.paired(f"{lo['name']}: loss(λ=1) − loss(λ=0), over batches",
                          b_lo["loss_at_1"], b_lo["loss_at_0"]),
             stats.paired(f"{hi['name']}: loss(λ=0) − loss(λ=1), over batches",
                          b_hi["loss_at_0"], b_hi["loss_at_1"])]
    ok, text, comps = _verdict(comps)
    line = ", ".join(f"{a['name']} {m:+.1f}" for a, m in zip(arms, mins))
    checks = (f"argmin λ {line} (= 0 at the lowest τ: {at0}, per seed "
              f"{min(spread):+.1f}..{max(spread):+.1f}; non-decreasing in τ: {monotone}; "
              f"≥ 0.8 at the highest: {far})")
    return ok and at0 and monotone and far, f"{checks}; {text}", comps


def _check_shift_toy(arms):
    a = arms[0]
    traj = [h["gap"] for h in a["history"]]
    line = ", ".join(f"{x['name']} {x['final']['argmin_lambda']:+.2f}" for x in arms)
    return False, (f"example, not a reproduction: argmin λ {line}; gap {traj[0]:.3f} at init -> "
                   f"{traj[-1]:.3f} after {len(traj) - 1} epochs, still moving "
                   f"{a['final']['gap_slope']:+.4f}/epoch"), []


def _check_mismatch(arms):
    names = [a["name"] for a in arms]
    return _verdict([stats.paired(f"gap {b} − {a}", _v(arms, b, "gap"), _v(arms, a, "gap"))
                     for a, b in zip(names, names[1:])])


def _check_schedule(arms):
    base, rising, slow = "learnable (CLIP)", "rising 0.02->0.1", "learnable, tau lr x0.1"
    comps = [stats.paired(f"gap {rising} − {base}", _v(arms, rising, "gap"), _v(arms, base, "gap"),
                          "<"),
             stats.paired(f"gap {slow} − {base}", _v(arms, slow, "gap"), _v(arms, base, "gap"),
                          "<")]
    rec = stats.paired(f"recall@1 {rising} − {base}", _recall(arms, rising), _recall(arms, base))
    return _verdict(comps, "not required: " + stats.describe(rec))


def _check_swap(arms):
    base, pick = "none", "hard p=0.1"
    comps = [stats.paired(f"gap {pick} − {base}", _v(arms, pick, "gap"), _v(arms, base, "gap"),
                          "<"),
             stats.at_least(f"recall@1 {pick} − {base} (kept: > −0.02)",
                            [a - b for a, b in zip(_recall(arms, pick), _recall(arms, base))],
                            -0.02)]
    others = ", ".join(f"{a['name']} {a['final']['gap']:.3f}" for a in arms)
    return _verdict(comps, f"gap by arm: {others}")


def _check_shared(arms):
    return _verdict([
        stats.paired("gap shared − separate", _v(arms, "shared", "gap"),
                     _v(arms, "separate", "gap"), "<"),
        stats.paired("gap shared+imsep − shared", _v(arms, "shared+imsep", "gap"),
                     _v(arms, "shared", "gap"), "<"),
        stats.at_least("zero-shot shared+imsep − separate (kept: > −0.02)",
                       [a - b for a, b in zip(_v(arms, "shared+imsep", "zero_shot"),
                                              _v(arms, "separate", "zero_shot"))], -0.02)])


def _check_condition(arms):
    def curves(name):
        return [[h["cond_image"] for h in r["history"]] for r in _arm(arms, name)["per_seed"]]
    c, a = curves("contrastive"), curves("positives only")
    rise = [math.log(max(x) / x[0]) for x in c]
    fall = [math.log(max(x) / x[-1]) for x in c]
    return _verdict([
        stats.at_least("contrastive: log(peak / start)", rise, 0.0),
        stats.at_least("contrastive: log(peak / end)", fall, 0.0),
        stats.paired("log cond at the end: positives only − contrastive",
                     [math.log(x[-1]) for x in a], [math.log(x[-1]) for x in c])])


def _check_structure(arms):
    base = arms[0]["name"]
    comps = [stats.paired(f"probe {a['name']} − {base}", _v(arms, a["name"], "probe_image"),
                          _v(arms, base, "probe_image")) for a in arms[1:]]
    zs = [stats.paired(f"zero-shot {a['name']} − {base}", _v(arms, a["name"], "zero_shot"),
                       _v(arms, base, "zero_shot")) for a in arms[1:]]
    return _verdict(comps, "not required: " + "; ".join(stats.describe(z) for z in zs))


_CLIP_TAU = {"temperature": "learnable", "scale_lr_mult": 1.0}  # CLIP: τ learns at the base lr

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
          _check_init_gap, kind="embeddings", bars=("gap", "cone_image", "cone_text")),
    Study("temperature", f"{LIANG}; {YARAS}",
          "the gap from initialization is preserved at low tau and closes more at high tau "
          "(monotone over the sweep); learnable tau drops and leaves the gap open",
          "synthetic",
          [Arm(f"tau={t:g}", train={"temperature": "fixed", "tau": t})
           for t in (1.0, 0.1, 0.05, 0.01)] + [Arm("learnable", train=_CLIP_TAU)],
          _check_temperature, bars=("gap", "i2t_r1", "tau"),
          sizes={"quick": {"train": {"epochs": 40}}}),
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
          sizes={"quick": {"train": {"epochs": 30}}}, example=True),
    Study("mismatch", YARAS, "the final gap grows with the fraction of mismatched pairs",
          "synthetic", [Arm(f"mismatch={f:g}", train={"mismatch": f}) for f in (0.0, 0.1, 0.3)],
          _check_mismatch, bars=("gap", "i2t_r1", "cone_image"),
          # τ fixed: a learnable τ rises with the mismatch and hides part of its effect
          train={"temperature": "fixed", "tau": 0.03}),
    Study("schedule", YARAS,
          "temperature control: a schedule that raises tau during training, or a smaller "
          "learning rate on the learnable tau, ends with a smaller gap than CLIP's learnable tau",
          "synthetic",
          [Arm("learnable (CLIP)", train=_CLIP_TAU),
           Arm("learnable, tau lr x0.1", train={**_CLIP_TAU, "scale_lr_mult": 0.1}),
           Arm("rising 0.02->0.1", train={"temperature": "schedule", "tau": 0.02,
                                          "tau_end": 0.1, "schedule": "linear"}),
           Arm("rising cosine 0.02->0.1", train={"temperature": "schedule", "tau": 0.02,
                                                 "tau_end": 0.1, "schedule": "cosine"})],
          _check_schedule, bars=("gap", "i2t_r1", "tau")),
    Study("swap", YARAS,
          "modality swapping (per embedding entry, hard or soft, probability p; or whole pairs) "
          "shrinks the gap, best at small p, with retrieval kept",
          "synthetic",
          [Arm("none"), Arm("pair p=0.25", train={"swap_p": 0.25, "swap_mode": "pair"})]
          + [Arm(f"hard p={p:g}", train={"swap_p": p, "swap_mode": "hard"}) for p in (0.1, 0.5, 0.9)]
          + [Arm("soft p=0.5", train={"swap_p": 0.5, "swap_mode": "soft"})],
          _check_swap, bars=("gap", "i2t_r1", "t2i_r1"),
          # CLIP's final τ, fixed: the gap it leaves open is what swapping should close; 30
          # epochs: without swapping the gap is still closing at 15
          train={"temperature": "fixed", "tau": 0.01},
          sizes={"quick": {"train": {"epochs": 30}}}),
    Study("shared", ALIGNCLIP,
          "a shared encoder (SharedCLIP) has a smaller gap than separate towers; with the "
          "intra-modality separation loss (IMSep) the smallest, zero-shot accuracy kept",
          "digits",
          [Arm("separate", model={"kind": "towers"}), Arm("shared", model={"kind": "shared"}),
           Arm("shared+imsep", model={"kind": "shared"}, train={"imsep": 0.5})],
          _check_shared, bars=("gap", "zero_shot"), train=_CLIP_TAU),
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
          [Arm("baseline"), Arm("+separation", model={"private": True}, train={"dfs": 0.5}),
           Arm("+bridge", train={"bridge": 0.5}), Arm("+geometric", train={"geo": 1.0})],
          _check_structure, bars=("probe_image", "zero_shot", "gap"),
          train={**_CLIP_TAU, "augment": 0.3}),
]

BY_NAME = {s.name: s for s in STUDIES}
