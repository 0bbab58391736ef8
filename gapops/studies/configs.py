"""The nine studies of STUDIES.md as named configurations, each with the check of its claim.

A check reads the arms (seed-averaged, or one seed's) and says whether the paper's direction
shows, with the numbers behind the verdict. The runner applies it to the mean over seeds and to
each seed, and reports both.
"""
from __future__ import annotations

from .registry import Arm, Study

LIANG = "Liang et al. 2022, Mind the Gap (arXiv 2203.02053)"
YARAS = "Yaras et al. 2024, Explaining and Mitigating the Modality Gap (arXiv 2412.07909)"
ALIGNCLIP = "Eslami & de Melo 2024, AlignCLIP (arXiv 2406.17639)"
REN_LI = "Ren & Li 2023, On the Importance of Contrastive Loss in Multimodal Learning " \
         "(arXiv 2304.03717)"
JIANG = "Jiang et al. CVPR 2023, Understanding and Constructing Latent Modality Structures " \
        "(arXiv 2303.05952)"

# CLIP's learnable τ falls from 0.07 over ~10^5 steps; the quick runs have ~10^2, so the
# log-scale learns this many times faster than the other weights (see docs/studies_section.md).
_SCALE_LR = {"scale_lr_mult": 20.0}


def _f(arms, name, metric):
    return next(a for a in arms if a["name"] == name)["final"][metric]


def _recall(arms, name):
    return 0.5 * (_f(arms, name, "i2t_r1") + _f(arms, name, "t2i_r1"))


def _check_cone(arms):
    shallow, deep = arms[0], arms[-1]
    c0, c1 = shallow["final"]["cone_image"], deep["final"]["cone_image"]
    r1 = deep["final"]["cone_random"]
    gap = min(a["final"]["gap"] for a in arms)
    ok = c1 > c0 and r1 > 0.2 and gap > 0.3
    return ok, (f"cone cosine {c0:.2f} at depth {shallow['params']['depth']} -> {c1:.2f} at depth "
                f"{deep['params']['depth']} ({r1:.2f} on random inputs); gap at init >= {gap:.2f}")


def _check_temperature(arms):
    g_lo, g_hi = _f(arms, "tau=0.01", "gap"), _f(arms, "tau=1", "gap")
    g_l, t_l = _f(arms, "learnable", "gap"), _f(arms, "learnable", "tau")
    ok = g_lo > g_hi and t_l < 0.07 / 2 and g_l > g_hi
    return ok, (f"gap {g_lo:.3f} at tau=0.01 vs {g_hi:.3f} at tau=1; learnable tau 0.07 -> "
                f"{t_l:.3f} with gap {g_l:.3f}")


def _check_shift(arms):
    lo, hi = arms[0]["final"]["argmin_lambda"], arms[-1]["final"]["argmin_lambda"]
    ok = abs(lo) <= 0.3 and hi >= lo + 0.3
    return ok, (f"loss minimized at lambda={lo:+.2f} for {arms[0]['name']}, "
                f"lambda={hi:+.2f} for {arms[-1]['name']} (lambda=1 closes the gap)")


def _check_mismatch(arms):
    gaps = [a["final"]["gap"] for a in arms]
    ok = all(b > a for a, b in zip(gaps, gaps[1:]))
    return ok, "gap " + " -> ".join(f"{g:.3f}" for g in gaps) + " as mismatch grows " + \
        "(" + ", ".join(a["name"] for a in arms) + ")"


def _check_schedule(arms):
    sched = "cosine 0.1->0.03"  # the check's schedule; the 0.5->0.02 arm is reported beside it
    g_s, g_l = _f(arms, sched, "gap"), _f(arms, "learnable", "gap")
    r_s, r_l = _recall(arms, sched), _recall(arms, "learnable")
    g_2, r_2 = _f(arms, "cosine 0.5->0.02", "gap"), _recall(arms, "cosine 0.5->0.02")
    ok = g_s < g_l and r_s >= r_l - 0.02
    return ok, (f"gap {g_s:.3f} ({sched}) vs {g_l:.3f} (learnable); recall@1 {r_s:.3f} vs "
                f"{r_l:.3f}; cosine 0.5->0.02: gap {g_2:.3f}, recall@1 {r_2:.3f}")


def _check_swap(arms):
    g0, r0 = arms[0]["final"]["gap"], _recall(arms, arms[0]["name"])
    gs = [a["final"]["gap"] for a in arms[1:]]
    rs = [_recall(arms, a["name"]) for a in arms[1:]]
    ok = all(g < g0 for g in gs) and min(rs) >= r0 - 0.02
    return ok, (f"gap {g0:.3f} at p=0 -> " + ", ".join(f"{g:.3f}" for g in gs) +
                f"; recall@1 {r0:.3f} -> " + ", ".join(f"{r:.3f}" for r in rs))


def _check_shared(arms):
    g = {a["name"]: a["final"]["gap"] for a in arms}
    z = {a["name"]: a["final"]["zero_shot"] for a in arms}
    shared_ok = g["shared"] < g["separate"]
    imsep_ok = g["shared+imsep"] < g["shared"] and z["shared+imsep"] >= z["separate"] - 0.02
    return shared_ok and imsep_ok, (
        f"SharedCLIP {'yes' if shared_ok else 'no'}: gap {g['shared']:.3f} vs {g['separate']:.3f} "
        f"separate; IMSep {'yes' if imsep_ok else 'no'}: gap {g['shared+imsep']:.3f}; zero-shot "
        + ", ".join(f"{k} {v:.3f}" for k, v in z.items()))


def _check_condition(arms):
    def curve(name):
        return [h["cond_image"] for h in next(a for a in arms if a["name"] == name)["history"]]
    c, a = curve("contrastive"), curve("positives only")
    peak = max(c)
    ok = peak > 1.2 * c[0] and peak > 1.2 * c[-1] and a[-1] > 2 * c[-1]
    return ok, (f"contrastive: cond {c[0]:.1f} -> peak {peak:.1f} -> {c[-1]:.1f}; positives "
                f"only: {a[0]:.1f} -> {a[-1]:.1f}")


def _check_structure(arms, margin: float = 0.01):
    """At least one regularizer beats the baseline's zero-shot accuracy by ``margin``."""
    base = arms[0]
    acc = lambda a: a["final"]["zero_shot"]  # noqa: E731
    best = max(arms[1:], key=acc)
    ok = acc(best) >= acc(base) + margin
    return ok, (f"zero-shot {acc(base):.3f} baseline; " +
                ", ".join(f"{a['name']} {acc(a):.3f}" for a in arms[1:]) +
                f" (needs +{margin:.2f}); gap " +
                ", ".join(f"{a['name']} {a['final']['gap']:.3f}" for a in arms))


STUDIES = [
    Study("cone", LIANG,
          "randomly initialized encoders map inputs into a narrow cone that narrows with depth; "
          "two towers start in different cones, so the gap exists at initialization",
          "synthetic", [Arm(f"depth={d}", model={"depth": d}) for d in (1, 2, 4, 8)],
          _check_cone, kind="cone", key="cone_image", bars=("cone_image", "cone_random", "gap")),
    Study("temperature", f"{LIANG}; {YARAS}",
          "the gap from initialization is preserved at low tau and closes more at high tau; "
          "learnable tau drops quickly and leaves the gap open",
          "synthetic",
          [Arm(f"tau={t:g}", train={"temperature": "fixed", "tau": t})
           for t in (1.0, 0.1, 0.05, 0.01)]
          + [Arm("learnable", train={"temperature": "learnable", **_SCALE_LR})],
          _check_temperature, bars=("gap", "i2t_r1", "tau")),
    Study("shift", LIANG,
          "shifting trained embeddings along the gap: at low tau (the training tau, 0.01) the "
          "loss is lowest near the current gap (lambda=0); at high tau the minimum moves toward "
          "closing it",
          "synthetic",
          [Arm(f"tau={t:g}", train={"eval_tau": t}) for t in (0.01, 0.02, 0.05, 0.1, 1.0)],
          _check_shift, kind="shift", bars=("argmin_lambda", "loss_shift_min"),
          # one model per seed, trained at CLIP's final τ long enough for its gap to settle
          train={"temperature": "fixed", "tau": 0.01},
          sizes={"quick": {"train": {"epochs": 30}}}),
    Study("mismatch", YARAS, "the final gap grows with the fraction of mismatched pairs",
          "synthetic", [Arm(f"mismatch={f:g}", train={"mismatch": f}) for f in (0.0, 0.1, 0.3)],
          _check_mismatch, bars=("gap", "i2t_r1", "cone_image"),
          # τ fixed: a learnable τ rises with the mismatch and hides part of its effect
          train={"temperature": "fixed", "tau": 0.03}),
    Study("schedule", YARAS,
          "a temperature schedule (high early, low late) ends with a smaller gap than learnable "
          "tau, with retrieval at least as good",
          "synthetic",
          [Arm("learnable", train={"temperature": "learnable", **_SCALE_LR}),
           Arm("fixed tau=0.1", train={"temperature": "fixed", "tau": 0.1}),
           Arm("cosine 0.1->0.03", train={"temperature": "schedule", "tau": 0.1,
                                          "tau_end": 0.03, "schedule": "cosine"}),
           Arm("cosine 0.5->0.02", train={"temperature": "schedule", "tau": 0.5,
                                          "tau_end": 0.02, "schedule": "cosine"})],
          _check_schedule, bars=("gap", "i2t_r1", "t2i_r1")),
    Study("swap", YARAS,
          "swapping image and text for a random subset of pairs (probability p) shrinks the gap "
          "as p grows, with retrieval kept",
          "synthetic", [Arm(f"p={p:g}", train={"swap_p": p}) for p in (0.0, 0.1, 0.25, 0.5)],
          _check_swap, bars=("gap", "i2t_r1", "t2i_r1"),
          train={"temperature": "learnable", **_SCALE_LR}),
    Study("shared", ALIGNCLIP,
          "a shared encoder (SharedCLIP) has a smaller gap than separate towers; with the "
          "intra-modality separation loss (IMSep) the smallest, zero-shot accuracy kept",
          "digits",
          [Arm("separate", model={"kind": "towers"}), Arm("shared", model={"kind": "shared"}),
           Arm("shared+imsep", model={"kind": "shared"}, train={"imsep": 0.5})],
          _check_shared, bars=("gap", "zero_shot"),
          train={"temperature": "learnable", **_SCALE_LR}),
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
          "regularizing the latent modality structure (feature separation, Brownian bridge, "
          "geometric consistency) helps downstream accuracy; exact alignment is not optimal",
          "synthetic",
          [Arm("baseline"), Arm("+separation", model={"private": True}, train={"dfs": 0.5}),
           Arm("+bridge", train={"bridge": 0.5}), Arm("+geometric", train={"geo": 1.0})],
          _check_structure, bars=("gap", "zero_shot", "class_probe"),
          train={"temperature": "learnable", **_SCALE_LR}),
]

BY_NAME = {s.name: s for s in STUDIES}
