"""One figure per study from its result dict; matplotlib is optional (a message, no figure)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("(matplotlib is not installed: no figure written; pip install matplotlib)")
        return None


def _history_panel(ax, result: dict, key: str, log: bool) -> None:
    for a in result["arms"]:
        ep = [h["epoch"] for h in a["history"] if h.get(key) is not None]
        ys = [h[key] for h in a["history"] if h.get(key) is not None]
        ax.plot(ep, ys, marker="o", ms=2.5, label=a["name"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _bar_panel(ax, result: dict, bars: tuple) -> None:
    names = [a["name"] for a in result["arms"]]
    width = 0.8 / len(bars)
    for j, metric in enumerate(bars):
        means = [a["final"].get(metric) or 0.0 for a in result["arms"]]
        stds = [a["final_std"].get(metric) or 0.0 for a in result["arms"]]
        xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=metric)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=7)
    values = [a["final"].get(m) for a in result["arms"] for m in bars]
    if all(v is not None and 0.0 <= v <= 1.0 for v in values):
        ax.set_ylim(0.0, 1.0)  # gap, recall, accuracy: one 0–1 axis, read at a glance
    # the legend above the axes: it never covers a bar
    ax.legend(fontsize=7, ncol=len(bars), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.set_xlabel(f"final, mean ± std over {len(result['seeds'])} seeds", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _cone_panels(axes, result: dict) -> None:
    depth = [a["params"]["depth"] for a in result["arms"]]
    for metric in ("cone_image", "cone_text", "cone_random", "gap"):
        axes[0].errorbar(depth, [a["final"][metric] for a in result["arms"]],
                         yerr=[a["final_std"][metric] for a in result["arms"]], marker="o",
                         capsize=2, label=metric)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("trunk depth (random init)")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    # the depth the other studies train (2), else the deepest
    pick = next((a for a in result["arms"] if a["params"].get("depth") == 2), result["arms"][-1])
    deep = pick["scatter"]
    for mod, color in (("image", "tab:blue"), ("text", "tab:red")):
        pts = deep[mod]
        axes[1].scatter([p[0] for p in pts], [p[1] for p in pts], s=6, c=color, label=mod)
    axes[1].set_title(f"PCA of both towers' embeddings at init ({pick['name']})", fontsize=8)
    axes[1].legend(fontsize=7)


def _shift_panels(axes, result: dict) -> None:
    hi = 0.5
    for a in result["arms"]:
        lam = [p["lambda"] for p in a["landscape"]]
        loss = [p["loss"] for p in a["landscape"]]
        base = loss[lam.index(0.0)]
        axes[0].plot(lam, [v - base for v in loss], label=a["name"])
        best = min(range(len(lam)), key=loss.__getitem__)
        axes[0].plot(lam[best], loss[best] - base, "k.", ms=8)
        hi = max(hi, max(v - base for v in loss))
    axes[0].set_ylim(-0.6, min(hi, 2.5))
    axes[0].axvline(1, color="gray", lw=0.5, ls="--")
    axes[0].axvline(0, color="gray", lw=0.5)
    axes[0].set_xlabel("shift λ (0 = as embedded, 1 = centroids matched)")
    axes[0].set_ylabel("loss(λ) − loss(0)")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if result.get("kind") == "real_shift":
        _distance_panel(axes[1], result)
        return
    taus = [a["params"]["eval_tau"] for a in result["arms"]]
    axes[1].errorbar(taus, [a["final"]["argmin_lambda"] for a in result["arms"]],
                     yerr=[a["final_std"]["argmin_lambda"] for a in result["arms"]], marker="o",
                     capsize=2)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("τ of the loss")
    axes[1].set_ylabel("argmin λ")
    axes[1].grid(alpha=0.3)


def _distance_panel(ax, result: dict) -> None:
    """Liang et al.'s view: loss against the distance between the centres, λ from −2 to 1."""
    for a in result["arms"]:
        pts = [p for p in a["landscape"] if p["lambda"] <= 1.0]
        base = next(p["loss"] for p in pts if p["lambda"] == 0.0)
        line, = ax.plot([p["gap"] for p in pts], [p["loss"] - base for p in pts],
                        label=f"{a['name']}: min at λ={a['final']['argmin_lambda']:g}")
        g0 = next(p["gap"] for p in pts if p["lambda"] == 0.0)
        ax.plot(g0, 0.0, "o", color=line.get_color(), ms=4)
    ax.set_xlabel("distance between the centres ||Δ'|| (● = as embedded)")
    ax.set_ylabel("loss − loss(as embedded)")
    ax.set_ylim(-0.6, 2.5)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def _early_panels(axes, result: dict) -> None:
    """Theorem 3.3: per arm, the histogram of the gap's change over the first steps (one count
    per random init), and the change against the gap at init."""
    from .configs import gap_change
    for a in result["arms"]:
        change = gap_change(a)
        axes[0].hist(change, bins=20, alpha=0.6,
                     label=f"{a['name']}: mean {sum(change) / len(change):+.3f}")
        axes[1].scatter([r["history"][0]["gap"] for r in a["per_seed"]], change, s=6,
                        label=a["name"])
    steps = result["arms"][0]["per_seed"][0]["history"][1]["step"]
    axes[0].axvline(0, color="gray", lw=0.8)
    axes[0].set_xlabel(f"gap change over the first {steps} steps")
    axes[0].set_ylabel(f"random inits (of {len(result['seeds'])})")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="gray", lw=0.8)
    axes[1].set_xlabel("gap at init")
    axes[1].set_ylabel("change")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)


def _closing_panels(axes, result: dict) -> None:
    """Theorem 3.2: the gap against −1/log(t)², per seed, with its straight-line fit."""
    import math
    from .configs import closing_fit
    for r in result["arms"][0]["per_seed"]:
        pts = [(-1.0 / math.log(h["step"]) ** 2, h["gap"]) for h in r["history"]
               if h.get("step", 0) > 1]
        fit = closing_fit(r["history"])
        line, = axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=2.5)
        ends = [pts[0][0], pts[-1][0]]
        axes[0].plot(ends, [fit["intercept"] + fit["slope"] * x for x in ends], "-",
                     color=line.get_color(), lw=0.8, label=f"seed {r['seed']}: R² {fit['r2']:.3f}")
    axes[0].set_xlabel("−1/log(t)²  (t = training step)")
    axes[0].set_ylabel("gap")
    axes[0].legend(fontsize=6)
    axes[0].grid(alpha=0.3)
    _history_panel(axes[1], result, "tau", False)


def _sweep_panels(axes, result: dict) -> None:
    """The fixed-τ sweep: final gap, image retrieval and probe against τ (log axis)."""
    taus = [a["params"]["tau"] for a in result["arms"]]
    for ax, metrics in ((axes[0], ("gap",)), (axes[1], ("t2i_r1", "class_probe"))):
        for m in metrics:
            ax.errorbar(taus, [a["final"][m] for a in result["arms"]],
                        yerr=[a["final_std"][m] for a in result["arms"]], marker="o", capsize=2,
                        label=m)
        ax.set_xscale("log")
        ax.set_xlabel("fixed τ")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)


def plot_study(result: dict, path, key: str = "gap", bars: tuple = ("gap",),
               log_key: bool = False) -> bool:
    """Write the study's two-panel figure to ``path`` (PNG); False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    kind = result.get("kind")
    if kind == "cone":
        _cone_panels(axes, result)
    elif kind in ("shift", "real_shift"):
        _shift_panels(axes, result)
    elif kind == "early":
        _early_panels(axes, result)
    elif kind == "closing":
        _closing_panels(axes, result)
    elif result["study"] == "temperature":
        _sweep_panels(axes, result)
    elif kind == "embeddings":
        _bar_panel(axes[0], result, bars)
        _bar_panel(axes[1], result, ("i2t_r1", "t2i_r1", "alignment"))
    else:
        _history_panel(axes[0], result, key, log_key)
        _bar_panel(axes[1], result, bars)
    verdict = ("smoke test" if result["scale"] == "tiny" else "example" if result.get("example")
               else result["outcome"])
    fig.suptitle(f"{result['study']}: {verdict} ({result['scale']}, "
                 f"{len(result['seeds'])} {result.get('unit', 'seed')}s)", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
