"""``python -m gapops.metrics``: users' own embeddings in, the summary (and shift) out."""
import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gapops.metrics import noise_condition_number, retrieval_recall, summary
from gapops.metrics.__main__ import condition_caveat, load_pair, main


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
    assert "gap" in table and "cond_*" not in table  # N = 7.5 d: no condition-number caveat
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


def _error(capsys, argv) -> str:
    """Run the CLI on bad input: exit code 2 and one error line, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("shape,what", [((2, 0, 8), "no rows"), ((2, 5, 0), "zero columns"),
                                        ((2, 1, 8), "one row")])
def test_empty_arrays_are_named_not_a_traceback(tmp_path, capsys, shape, what):
    np.save(tmp_path / "emb.npy", np.zeros(shape, np.float32))
    err = _error(capsys, [str(tmp_path / "emb.npy")])
    assert "emb.npy" in err and what in err
    np.save(tmp_path / "img.npy", np.zeros(shape[1:], np.float32))
    np.save(tmp_path / "txt.npy", np.zeros(shape[1:], np.float32))
    err = _error(capsys, [str(tmp_path / "img.npy"), str(tmp_path / "txt.npy")])
    assert "img.npy" in err and what in err


def test_nan_rows_are_named_with_their_file_and_rows(tmp_path, capsys):
    x, y = _pair(n=40)
    y[[3, 17]] = float("nan")
    y[20, 0] = float("inf")
    torch.save(x, tmp_path / "img.pt")
    torch.save(y, tmp_path / "txt.pt")
    err = _error(capsys, [str(tmp_path / "img.pt"), str(tmp_path / "txt.pt")])
    assert "txt.pt" in err and "3 of 40 rows hold NaN or inf (rows 3, 17, 20)" in err
    np.save(tmp_path / "emb.npy", torch.stack([y, x]).numpy())
    err = _error(capsys, [str(tmp_path / "emb.npy")])
    assert "emb.npy (image embeddings" in err and "NaN" in err


def test_unreadable_files_are_named_without_advice_the_cli_cannot_follow(tmp_path, capsys):
    for name in ("emb.npy", "emb.pt"):
        (tmp_path / name).write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n")
        err = _error(capsys, [str(tmp_path / name)])
        assert name in err and "allow_pickle" not in err and "weights_only" not in err
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    assert "not numbers" in _error(capsys, [str(tmp_path / "words.npy")])
    torch.save({"x": torch.zeros(2)}, tmp_path / "dict.pt")
    assert "expected a saved tensor" in _error(capsys, [str(tmp_path / "dict.pt")])


def test_a_real_invocation_prints_one_line_and_no_traceback(tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((2, 0, 8), np.float32))
    run = subprocess.run([sys.executable, "-m", "gapops.metrics", str(tmp_path / "emb.npy")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "emb.npy" in run.stderr and "no rows" in run.stderr


def test_table_csv_and_json_agree_on_an_infinite_condition_number(tmp_path, capsys):
    x, y = _pair(n=20, d=30, seed=3)  # N <= d: centered, rank-deficient, cond = inf
    np.save(tmp_path / "emb.npy", torch.stack([x, y]).numpy())
    assert summary(x, y, probe=False)["cond_image"] == math.inf
    assert main([str(tmp_path / "emb.npy"), "--json", "--no-probe"]) == 0
    assert json.loads(capsys.readouterr().out)["cond_image"] is None
    assert main([str(tmp_path / "emb.npy"), "--no-probe", "--csv", str(tmp_path / "m.csv")]) == 0
    table = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()
                 if not line.startswith("cond_*"))
    assert table["cond_image"] == table["cond_text"] == "null"
    assert dict(csv.reader(open(tmp_path / "m.csv")))["cond_image"] == "null"


@pytest.mark.parametrize("n,d,says", [
    (99, 768, "infinite"), (512, 512, "infinite"),           # N <= d: rank-deficient
    (513, 512, "inflated"), (1000, 512, "inflated"), (2047, 512, "inflated"),  # d < N < 4d
    (2048, 512, None), (100000, 768, None), (60, 8, None)])  # N >= 4d: noise floor below 3
def test_condition_caveat_only_where_the_shape_inflates_it(n, d, says):
    caveat = condition_caveat(n, d)
    if says is None:
        assert caveat is None
    else:
        assert says in caveat and "close" not in caveat
    if says == "inflated" and n > d + 1:  # it says how large isotropic noise makes it
        assert f"near {noise_condition_number(n, d):.1f}" in caveat


def test_caveat_in_the_table_for_n_much_smaller_than_d(tmp_path, capsys):
    x, y = _pair(n=99, d=768, seed=4)
    np.save(tmp_path / "emb.npy", torch.stack([x, y]).numpy())
    assert main([str(tmp_path / "emb.npy"), "--no-probe"]) == 0
    caveat = capsys.readouterr().out.splitlines()[-1]
    assert caveat == condition_caveat(99, 768) and "N = 99" in caveat


def test_ids_file_makes_any_same_id_pair_a_hit(tmp_path, capsys):
    img = _pair(n=10, d=8, seed=5)[0]
    images = img.repeat_interleave(3, 0)  # 10 images, 3 captions each
    captions = images + 0.1 * _pair(n=30, d=8, seed=6)[1]
    ids = np.arange(10).repeat(3)
    np.save(tmp_path / "img.npy", images.numpy())
    np.save(tmp_path / "cap.npy", captions.numpy())
    np.save(tmp_path / "ids.npy", ids)
    files = [str(tmp_path / "img.npy"), str(tmp_path / "cap.npy"), "--json", "--no-probe"]
    assert main(files) == 0
    plain = json.loads(capsys.readouterr().out)
    torch.save(torch.from_numpy(ids), tmp_path / "ids.pt")
    for ids_file in ("ids.npy", "ids.pt"):
        assert main(files + ["--ids", str(tmp_path / ids_file)]) == 0
        out = json.loads(capsys.readouterr().out)
        want = retrieval_recall(images, captions, ids=torch.from_numpy(ids))
        assert {k: out[k] for k in want} == want
        assert out["t2i_r1"] == 1.0 and plain["t2i_r1"] == 0.0  # the image copies tie
        assert out["gap"] == plain["gap"]


def test_bad_ids_files_are_named(tmp_path, capsys):
    x, y = _pair(n=12)
    np.save(tmp_path / "emb.npy", torch.stack([x, y]).numpy())
    cases = {"short.npy": (np.arange(11), "shape [12]"),
             "float.npy": (np.arange(12) / 2, "must be integers"),
             "wide.npy": (np.arange(24).reshape(12, 2), "shape [12]")}
    for name, (arr, what) in cases.items():
        np.save(tmp_path / name, arr)
        err = _error(capsys, [str(tmp_path / "emb.npy"), "--ids", str(tmp_path / name)])
        assert name in err and what in err
