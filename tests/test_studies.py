"""The studies package: data, models, the loop (fused loss, exact resume) and every study, tiny."""
import json
import sys

import pytest
import torch

import gapops
from gapops import _dispatch
from gapops.studies import (STUDIES, ModelConfig, TrainConfig, build_model, digits, mismatch_pairs,
                            run_study, synthetic, train)
from gapops.studies.__main__ import main
from gapops.studies.checkpoint import seed_everything
from gapops.studies.loop import temperature_at

TINY = dict(epochs=3, batch_size=32, max_eval=64)


def _tiny_run(data, train_kw, model_kw=None, seed=0, **kw):
    seed_everything(seed)
    model = build_model(ModelConfig(hidden=16, embed_dim=8, **(model_kw or {})),
                        data.images[:2], data.texts[:2], len(data.vocab) if data.vocab else None)
    return model, train(model, data, TrainConfig(**{**TINY, **train_kw}), seed, **kw)


# ---------------------------------------------------------------- data and models

def test_synthetic_is_a_function_of_the_seed():
    a, b, c = synthetic(n=200, seed=1), synthetic(n=200, seed=1), synthetic(n=200, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.texts, b.texts)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (200, 32) and a.prompts.shape == (10, 1, 32)
    assert set(a.train.tolist()) | set(a.test.tolist()) == set(range(200))


def test_digits_ship_with_captions_and_class_prompts():
    d = digits(seed=0)
    assert d.images.shape == (1797, 64) and d.texts.dtype == torch.long
    assert d.prompts.shape[:2] == (10, 3) and int(d.texts.max()) < len(d.vocab)
    caption = " ".join(d.vocab[i] for i in d.texts[0].tolist() if i)
    assert caption == d.info["caption_example"]


def test_mismatch_pairs_rematches_exactly_the_fraction():
    idx = mismatch_pairs(1000, 0.3, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == list(range(1000))  # a permutation
    assert int((idx != torch.arange(1000)).sum()) == 300  # chosen pairs all really move
    assert torch.equal(mismatch_pairs(50, 0.0, torch.Generator()), torch.arange(50))


def test_models_clamp_the_scale_and_share_the_trunk():
    d = synthetic(n=64, seed=0)
    m = build_model(ModelConfig(kind="shared", hidden=8, embed_dim=4, init_tau=1e-4),
                    d.images[:2], d.texts[:2])
    assert float(m.logit_scale().detach()) == 100.0
    assert m.image_encoder[1] is m.text_encoder[1] and m.image_proj is m.text_proj
    lin = build_model(ModelConfig(kind="linear", embed_dim=4), d.images[:2], d.texts[:2])
    assert lin.encode_image(d.images[:5]).shape == (5, 4)


def test_temperature_schedules_run_from_tau_to_tau_end():
    for sched in ("cosine", "linear", "step"):
        cfg = TrainConfig(temperature="schedule", tau=0.5, tau_end=0.02, schedule=sched)
        assert temperature_at(cfg, 0.0) == pytest.approx(0.5)
        assert temperature_at(cfg, 1.0) == pytest.approx(0.02)
    assert temperature_at(TrainConfig(temperature="fixed", tau=0.3), 0.7) == 0.3


# ---------------------------------------------------------------- the loop

def test_the_loop_trains_with_the_fused_loss_and_fresh_swap_masks(monkeypatch):
    calls = []
    real = gapops.contrastive_loss

    def spy(a, b, scale, swap_mask=None, **kw):
        calls.append((_dispatch.resolve(kw.get("backend", "auto"), a.device).name, swap_mask))
        return real(a, b, scale, swap_mask=swap_mask, **kw)

    monkeypatch.setattr(gapops, "contrastive_loss", spy)
    _, res = _tiny_run(synthetic(n=160, seed=0), {"swap_p": 0.5, "epochs": 2})
    assert len(calls) == res["steps"] == 2 * (128 // 32)
    assert {name for name, _ in calls} == {"cpu"}  # 'auto' on CPU is the fused C++ backend
    masks = [m for _, m in calls]
    assert all(m.dtype == torch.bool and m.shape == (32,) for m in masks)
    assert len({tuple(m.tolist()) for m in masks}) > 1  # a fresh mask each batch
    assert 0 < res["loss_s"] < res["step_s"]


def test_no_swap_mask_without_swapping(monkeypatch):
    masks = []
    real = gapops.contrastive_loss
    monkeypatch.setattr(gapops, "contrastive_loss",
                        lambda a, b, s, swap_mask=None, **kw: masks.append(swap_mask) or
                        real(a, b, s, swap_mask=swap_mask, **kw))
    _tiny_run(synthetic(n=96, seed=0), {"epochs": 1})
    assert masks and all(m is None for m in masks)


@pytest.mark.parametrize("setting", [
    {"swap_p": 0.3, "mismatch": 0.2},  # learnable τ, swap masks and mismatch draw from the RNGs
    {"temperature": "schedule", "tau": 0.3, "tau_end": 0.05, "bridge": 0.5, "imsep": 0.5},
], ids=["swap-mismatch", "schedule-regularizers"])
def test_resume_after_an_interrupt_is_exact(tmp_path, setting):
    data = synthetic(n=160, seed=3)
    full_model, full = _tiny_run(data, setting, seed=3)
    ck = tmp_path / "run.pt"
    _, part = _tiny_run(data, setting, seed=3, ckpt_path=ck, stop_after=1)
    assert not part["completed"] and len(part["history"]) == 2
    torch.manual_seed(12345)  # a new process: the global RNGs are elsewhere
    resumed_model, resumed = _tiny_run(data, setting, seed=3, ckpt_path=ck, resume=True)
    assert resumed["completed"]
    assert resumed["history"] == full["history"]  # exact float equality, every metric
    assert resumed["final"] == full["final"]
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    data = synthetic(n=96, seed=0)
    _tiny_run(data, {"epochs": 1}, ckpt_path=tmp_path / "a.pt")
    with pytest.raises(ValueError, match="another configuration"):
        _tiny_run(data, {"epochs": 1, "swap_p": 0.5}, ckpt_path=tmp_path / "a.pt", resume=True)


# ---------------------------------------------------------------- the studies

REQUIRED = ("study", "paper", "claim", "seed", "device", "config", "wall_s", "steps_per_s",
            "loss_time_share", "arms", "reproduced", "verdict")


@pytest.mark.parametrize("name", [s.name for s in STUDIES])
def test_every_study_runs_end_to_end_tiny(tmp_path, name):
    res = run_study(name, scale="tiny", seeds=1, out=tmp_path, progress=False, plot=False,
                    echo=None)
    on_disk = json.loads((tmp_path / f"{name}.json").read_text())
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["study"] == name and on_disk["device"] == "cpu"
    assert [a["name"] for a in on_disk["arms"]] == [a.name for a in
                                                    next(s for s in STUDIES if s.name == name).arms]
    for arm in on_disk["arms"]:
        assert isinstance(arm["final"]["gap"], float) and "gap" in arm["final_std"]
        assert arm["history"] and arm["history"][0]["epoch"] == 0
        assert "params" in arm
    assert isinstance(res["reproduced"], bool)


def test_swap_study_order_std_and_resume_of_a_finished_run(tmp_path):
    kw = dict(scale="tiny", seeds=2, out=tmp_path, progress=False, plot=True, echo=None)
    first = run_study("swap", **kw)
    assert [a["params"]["swap_p"] for a in first["arms"]] == [0.0, 0.1, 0.25, 0.5]
    assert first["seeds"] == [0, 1] and len(first["arms"][0]["per_seed"]) == 2
    assert first["arms"][0]["final_std"]["gap"] >= 0.0
    assert 0.0 < first["loss_time_share"] < 1.0 and first["steps_per_s"] > 0
    assert (tmp_path / "swap.png").stat().st_size > 1000
    again = run_study("swap", resume=True, **kw)  # every run is finished: nothing retrains
    assert [a["final"] for a in again["arms"]] == [a["final"] for a in first["arms"]]


def test_cli_list_and_run(tmp_path, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(s.name in out for s in STUDIES)
    assert main(["run", "cone", "--tiny", "--seeds", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert (tmp_path / "cone.json").exists() and (tmp_path / "cone.png").exists()
    assert "cone" in capsys.readouterr().out
    assert main(["run", "nope", "--tiny"]) == 2


def test_runs_without_tqdm_and_matplotlib(tmp_path, monkeypatch, capsys):
    for mod in ("tqdm", "tqdm.auto", "matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, mod, None)  # import now raises ImportError
    run_study("cone", scale="tiny", seeds=1, out=tmp_path, echo=None)
    out = capsys.readouterr().out
    assert "tqdm is not installed" in out and "matplotlib is not installed" in out
    assert (tmp_path / "cone.json").exists() and not (tmp_path / "cone.png").exists()
