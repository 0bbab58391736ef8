"""Run a study: every arm over every seed, then aggregate, check, write JSON + figure, print."""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable, Optional

import torch

import gapops

from . import plots
from .checkpoint import seed_everything
from .configs import BY_NAME
from .cone import run_cone
from .data import build_data
from .loop import TrainConfig, train
from .models import ModelConfig, build_model
from . import real
from .registry import Arm, Study
from .shift import real_shift_seed, shift_arm

TINY_NOTE = "tiny size: a smoke test of the code path, not meant to reproduce anything"

_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def get_study(name: str) -> Study:
    """The study called ``name`` (see ``python -m gapops.studies list``)."""
    if name not in BY_NAME:
        raise KeyError(f"unknown study {name!r}; choose one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def _train_config(kw: dict, device: str, backend: str) -> TrainConfig:
    known = {k: v for k, v in kw.items() if k in _TRAIN_FIELDS}
    return TrainConfig(**known, device=device, backend=backend)


class _Bar:
    """tqdm when installed, else a silent counter (the CLI says once that tqdm is missing)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, unit="epoch", leave=False)
            except ImportError:
                print("(tqdm is not installed: running without a progress bar)")

    def update(self, n: int = 1, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _build(study: Study, arm: Arm, seed: int, scale: str, device: str, backend: str):
    data_kw, model_kw, train_kw = study.resolve(scale, arm)
    data = build_data(study.data, seed, **data_kw)
    seed_everything(seed)  # the model's init is a function of the seed alone
    model = build_model(ModelConfig(**model_kw), data.images[:2], data.texts[:2],
                        len(data.vocab) if data.vocab else None)
    return data, model, _train_config(train_kw, device, backend)


def _run_train(study, arm, seed, scale, device, backend, ckpt_dir, resume, bar) -> dict:
    data, model, cfg = _build(study, arm, seed, scale, device, backend)
    tag = _slug(f"{arm.name}_seed{seed}")
    seen = []

    def tick(e):
        seen.append(e)
        bar.update(1, arm=arm.name, seed=seed, gap=f"{e['gap']:.3f}")

    res = train(model, data, cfg, seed, ckpt_path=ckpt_dir / f"{tag}.pt", resume=resume,
                on_epoch=tick)
    bar.update(cfg.epochs + 1 - len(seen))  # epochs a resumed run did not redo
    return res


def _run_shift_seed(study, seed, scale, device, backend, ckpt_dir, resume, bar) -> list:
    base = Arm("trained")  # one model per seed, shared by all arms
    data, model, cfg = _build(study, base, seed, scale, device, backend)
    seen = []
    trained = train(model, data, cfg, seed, ckpt_path=ckpt_dir / f"model_seed{seed}.pt",
                    resume=resume, on_epoch=lambda e: seen.append(bar.update(1, seed=seed)))
    bar.update(cfg.epochs + 1 - len(seen))
    return [shift_arm(trained, model, data, arm.train["eval_tau"], cfg.batch_size, device,
                      backend)
            for arm in study.arms]


class _Quiet:
    """A progress bar that shows nothing (the worker processes' runs)."""

    def update(self, n: int = 1, **postfix) -> None:
        pass


def _train_job(name, arm_index, seed, scale, device, backend, ckpt_dir, resume, threads):
    """One (arm, seed) training run in a worker process (the study is looked up again by name,
    so nothing unpicklable crosses)."""
    torch.set_num_threads(threads)
    study = get_study(name)
    return _run_train(study, study.arms[arm_index], seed, scale, device, backend, ckpt_dir,
                      resume, _Quiet())


def _train_parallel(study, seed_list, scale, device, backend, ckpt_dir, resume, bar,
                    jobs) -> dict:
    """{arm name: [result per seed]} of every (arm, seed) run over ``jobs`` worker processes.
    Each run seeds itself (data and init are functions of the seed), so the results are those
    of the serial loop."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    threads = torch.get_num_threads()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # forkserver, not fork: a fork of a process whose OpenMP pool already has threads (torch
    # ran with > 1 thread, e.g. earlier in a test session) deadlocks in the child. The server
    # is one single-threaded process per session with this module preloaded, so each worker
    # is a cheap fork of it.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = {(arm.name, s): pool.submit(_train_job, study.name, i, s, scale, device,
                                              backend, ckpt_dir, resume, threads)
                   for s in seed_list for i, arm in enumerate(study.arms)}
        runs = {arm.name: [] for arm in study.arms}
        for s in seed_list:
            for arm in study.arms:
                r = futures[(arm.name, s)].result()
                runs[arm.name].append(r)
                bar.update(len(r["history"]), arm=arm.name, seed=s)
    return runs


FOLDS = 5  # init_gap: the 500 bundled pairs as 5 disjoint folds of 100


def fold_rows(n: int, fold: int, folds: int = FOLDS) -> torch.Tensor:
    """Rows of fold ``fold % folds`` of one fixed shuffle of range(n): the folds are disjoint
    and together cover every row once."""
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return idx.chunk(folds)[fold % folds]


def _run_embeddings(study: Study, arm: Arm, seed: int) -> dict:
    """Metrics of bundled real embeddings on one disjoint fold (:func:`fold_rows`, fold =
    ``seed``): the unit of replication is a fold of 100 distinct pairs, not a resample."""
    x, y = real.load(arm.data["model"])
    idx = fold_rows(x.shape[0], seed)
    x, y = x[idx], y[idx]
    final = gapops.metrics.summary(x, y, probe=False)
    return {"history": [{"epoch": 0, **final}], "final": final, "steps": 0, "step_s": 0.0,
            "loss_s": 0.0, "eval_s": 0.0, "completed": True}


def _data_config(study: Study, scale: str) -> dict:
    data_kw = study.resolve(scale, Arm("base"))[0]
    if study.kind == "real_shift":
        return {**real.describe(data_kw["model"]), "batch_size": data_kw["batch_size"],
                "pairs": "held out (MSCOCO val2017, not in CLIP's training data)"}
    if study.kind == "embeddings":
        return {"kind": "embeddings", "models": [real.describe(a.data["model"])
                                                 for a in study.arms]}
    return {"kind": study.data, **data_kw}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in s)


def _clean(v):
    """JSON-safe: inf/nan -> None, tensors -> lists, recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _mean_std(values: list) -> tuple:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _aggregate(arm: Arm, runs: list, seeds: list) -> dict:
    """Seed-averaged final metrics (mean and std) and history (mean per epoch)."""
    keys = [k for k in runs[0]["final"] if all(k in r["final"] for r in runs)]
    final, final_std = {}, {}
    for k in keys:
        final[k], final_std[k] = _mean_std([r["final"][k] for r in runs])
    history = []
    for i in range(min(len(r["history"]) for r in runs)):
        rows = [r["history"][i] for r in runs]
        entry = {"epoch": rows[0]["epoch"]}
        for k in rows[0]:
            if k != "epoch" and all(k in row for row in rows):
                entry[k] = _mean_std([row[k] for row in rows])[0]
        history.append(entry)
    out = {"name": arm.name, "params": arm.params, "final": final, "final_std": final_std,
           "history": history,
           "per_seed": [{"seed": s, "final": r["final"], "history": r["history"]}
                        for s, r in zip(seeds, runs)]}
    if "landscape" in runs[0]:  # seed-averaged loss at each shift λ
        out["landscape"] = [{**p,  # λ (and the centre distance: the same in every seed)
                             "loss": statistics.fmean(r["landscape"][i]["loss"] for r in runs)}
                            for i, p in enumerate(runs[0]["landscape"])]
        # the arm's argmin: of the seed-averaged landscape (final_std: the per-seed spread)
        final["argmin_lambda"] = min(out["landscape"], key=lambda p: p["loss"])["lambda"]
    if "batches" in runs[0]:
        out["batches"] = runs[0]["batches"]  # the first seed's order: disjoint batches
    if "scatter" in runs[0]:
        out["scatter"] = runs[0]["scatter"]  # the first seed's, for the figure
    return out


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=1))
    os.replace(tmp, path)


def run_study(name: str, scale: str = "quick", seed: int = 0, seeds: int = 3,
              out="results", resume: bool = False, device: str = "cpu", backend: str = "auto",
              progress: bool = True, plot: bool = True,
              echo: Optional[Callable[[str], None]] = print, jobs: int = 1) -> dict:
    """Run study ``name`` at ``scale`` ('tiny', 'quick' or 'full') over seeds seed..seed+seeds-1.

    Writes OUT/NAME.json (the returned dict) and OUT/NAME.png, keeps per-run checkpoints in
    OUT/ckpt/NAME/ (``resume=True`` picks them up), and prints a table through ``echo``.
    ``outcome`` is 'reproduced', 'contradicted' or 'inconclusive' from the check's confidence
    intervals (``reproduced``: whether it is the first), None for the tiny size (a smoke test)
    and for examples. A study's own ``replicates`` count replaces ``seeds``. ``jobs`` > 1
    trains the (arm, seed) runs of a training study in that many worker processes (CPU only;
    same results as ``jobs=1``).
    """
    study = get_study(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "ckpt" / name
    seeds = study.replicates.get(scale, seeds)  # a study's own count (inits, folds) wins
    seed_list = [seed + i for i in range(seeds)]
    _, base_model, base_train = study.resolve(scale, Arm("base"))
    measured = study.kind in ("cone", "embeddings", "real_shift")
    epochs = 1 if measured else base_train["epochs"] + 1
    units = len(seed_list) * epochs * (1 if study.kind in ("shift", "real_shift")
                                       else len(study.arms))
    bar = _Bar(units, name, progress)
    t0 = time.perf_counter()
    runs = {arm.name: [] for arm in study.arms}
    parallel = jobs > 1 and device == "cpu" and study.kind in ("train", "early", "closing")
    if parallel:
        runs = _train_parallel(study, seed_list, scale, device, backend, ckpt_dir, resume, bar,
                               jobs)
    for s in ([] if parallel else seed_list):
        if study.kind == "real_shift":
            data_kw = study.resolve(scale, Arm("base"))[0]
            taus = [a.train["eval_tau"] for a in study.arms]
            for arm, r in zip(study.arms, real_shift_seed(data_kw["model"], taus, s,
                                                         data_kw["batch_size"], backend)):
                runs[arm.name].append(r)
            bar.update(1, seed=s)
            continue
        if study.kind == "shift":
            for arm, r in zip(study.arms, _run_shift_seed(study, s, scale, device, backend,
                                                         ckpt_dir, resume, bar)):
                runs[arm.name].append(r)
            continue
        for arm in study.arms:
            if study.kind == "cone":
                runs[arm.name].append(run_cone(study, arm, s, scale, device))
                bar.update(1, arm=arm.name, seed=s)
            elif study.kind == "embeddings":
                runs[arm.name].append(_run_embeddings(study, arm, s))
                bar.update(1, arm=arm.name, seed=s)
            else:
                runs[arm.name].append(_run_train(study, arm, s, scale, device, backend, ckpt_dir,
                                                 resume, bar))
    bar.close()
    wall = time.perf_counter() - t0

    arms = [_aggregate(arm, runs[arm.name], seed_list) for arm in study.arms]
    outcome, verdict, comparisons = study.check(arms)
    ok = outcome == "reproduced"
    reproduced = None if (scale == "tiny" or study.example) else ok
    if scale == "tiny":
        verdict = f"{TINY_NOTE}. {verdict}"
    # a shift study trains once per seed: count its steps once
    all_runs = [r for a in study.arms[:1 if study.kind == "shift" else None] for r in runs[a.name]]
    steps = sum(r["steps"] for r in all_runs)
    step_s = sum(r["step_s"] for r in all_runs)
    loss_s = sum(r["loss_s"] for r in all_runs)
    result = {
        "study": study.name, "kind": study.kind, "paper": study.paper, "claim": study.claim,
        "seed": seed, "seeds": seed_list, "device": device,
        "backend": backend, "backends": gapops.backends(),
        "scale": scale, "threads": torch.get_num_threads(),
        "config": {"data": _data_config(study, scale),
                   "model": ModelConfig(**base_model).to_dict(),
                   "train": _train_config(base_train, device, backend).to_dict()},
        "wall_s": wall, "train_s": step_s, "steps": steps,
        "steps_per_s": steps / step_s if step_s else None,
        "loss_time_share": loss_s / step_s if step_s else None,
        "reproduced": reproduced, "checks_hold": ok, "example": study.example,
        "outcome": None if (scale == "tiny" or study.example) else outcome,
        "unit": study.unit,
        "comparisons": comparisons, "verdict": verdict, "notes": study.notes,
        "versions": {"gapops": gapops.__version__, "torch": torch.__version__},
        "arms": arms,
    }
    _write_json(result, out / f"{name}.json")
    if plot:
        plots.plot_study(result, out / f"{name}.png", study.key, study.bars, study.log_key)
    if echo:
        echo(format_table(result, study.bars))
    return result


def verdict_tag(result: dict) -> str:
    """'REPRODUCED', 'CONTRADICTED', 'INCONCLUSIVE', 'EXAMPLE' or 'SMOKE TEST (tiny)'."""
    if result["scale"] == "tiny":
        return "SMOKE TEST (tiny, not a reproduction)"
    if result.get("example"):
        return "EXAMPLE (not a reproduction)"
    return result["outcome"].upper()


def format_table(result: dict, bars: tuple) -> str:
    """A short text table of the final metrics (mean ± std over seeds) and the verdict."""
    cols = list(bars)
    width = max(len(a["name"]) for a in result["arms"]) + 2
    lines = [f"== {result['study']}: {result['claim']}",
             "arm".ljust(width) + "".join(c.rjust(18) for c in cols)]
    for a in result["arms"]:
        cells = []
        for c in cols:
            m, s = a["final"].get(c), a["final_std"].get(c)
            cells.append("n/a".rjust(18) if m is None else f"{m:.3f} ± {s:.3f}".rjust(18))
        lines.append(a["name"].ljust(width) + "".join(cells))
    sps, share = result["steps_per_s"], result["loss_time_share"]
    timing = f"{result['wall_s']:.1f} s" + (f", {sps:.0f} steps/s, loss {100 * share:.0f}% of "
                                              f"the step" if sps else "")
    lines.append(f"{verdict_tag(result)} ({len(result['seeds'])} {result['unit']}s, 95% CIs): "
                 f"{result['verdict']}  [{timing}]")
    return "\n".join(lines)
