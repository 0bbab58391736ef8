"""``python -m gapops.metrics``: users' own embeddings in, the summary (and shift) out."""
import csv
import json

import numpy as np
import pytest
import torch

from gapops.metrics import summary
from gapops.metrics.__main__ import load_pair, main


def _pair(n=60, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 1.0, torch.randn(n, d, generator=g) - 1.0


def test_one_stacked_npy_gives_the_summary_as_json(tmp_path, capsys):
    x, y = _pair()
    np.save(tmp_path / "emb.npy", torch.stack([x, y]).numpy())
    assert main([str(tmp_path / "emb.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = summary(x, y)
    assert set(out) == set(want)
    assert out["gap"] == pytest.approx(want["gap"], rel=1e-6)
    assert out["i2t_r1"] == want["i2t_r1"]


def test_two_pt_files_table_and_csv(tmp_path, capsys):
    x, y = _pair(seed=1)
    torch.save(x, tmp_path / "img.pt")
    torch.save(y, tmp_path / "txt.pt")
    assert main([str(tmp_path / "img.pt"), str(tmp_path / "txt.pt"),
                 "--csv", str(tmp_path / "m.csv")]) == 0
    table = capsys.readouterr().out
    assert "gap" in table and "N close to d" in table  # the condition-number caveat
    rows = dict(csv.reader(open(tmp_path / "m.csv")))
    assert float(rows["gap"]) == pytest.approx(summary(x, y)["gap"], rel=1e-6)


def test_shift_adds_landscapes_and_a_plot(tmp_path, capsys):
    x, y = _pair(n=100, seed=2)
    np.save(tmp_path / "img.npy", x.numpy())
    np.save(tmp_path / "txt.npy", y.numpy())
    png = tmp_path / "shift.png"
    assert main([str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"), "--json", "--shift",
                 "--tau", "0.05", "1", "--batch-size", "25", "--plot", str(png),
                 "--no-probe"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["shift"]) == {"tau=0.05", "tau=1"}
    land = out["shift"]["tau=1"]["landscape"]
    best = min(land, key=lambda p: p["loss"])["lambda"]
    assert out["shift"]["tau=1"]["argmin_lambda"] == best
    assert "separability" not in out
    assert png.stat().st_size > 1000


def test_bad_inputs_exit_2(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.zeros((3, 4, 5), np.float32))
    assert main([str(tmp_path / "flat.npy")]) == 2
    np.save(tmp_path / "a.npy", np.zeros((4, 5), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 6), np.float32))
    assert main([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) == 2
    (tmp_path / "x.txt").write_text("1 2 3")
    assert main([str(tmp_path / "x.txt")]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(ValueError):
        load_pair([])
