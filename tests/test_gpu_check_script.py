"""benchmarks/gpu_check.sh without a GPU: its dry run (caps, partial results, report) and its pieces.

The GPU check must fit a 15-minute lease on a machine nobody can rehearse on, so what can be proven
on a CPU is proven here: every step runs under its own cap and the shared deadline, a step or a
benchmark method that hangs is killed at its cap while the rest carry on, and the Markdown + JSON
report comes out of whatever the steps left. About 30–60 s on 2 cores, longer under load (the
verdicts do not depend on the speed: see test_dry_run_caps_and_partial_results).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
SCRIPTS = ["gpu_check.sh", "gpu_sanitize.sh", "fetch_gpu_wheels.sh"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.update(OUT=str(tmp_path / "out"), GAPOPS_GPU_CHECK_WORK=str(tmp_path / "work"),
               PYTHON=sys.executable, GAPOPS_GPU_CHECK_DRYRUN="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("GAPOPS_GPU_CHECK_STEPS", None)
    env.update(extra)
    return env


def _steps(tmp_path):
    with open(tmp_path / "work" / "steps.jsonl") as f:
        return {s["step"]: s for s in map(json.loads, f)}


@pytest.mark.parametrize("script", SCRIPTS + ["../.ci/run"])
def test_shell_syntax(script):
    subprocess.run(["bash", "-n", os.path.join(BENCH, script)], check=True)


def test_dry_run_caps_and_partial_results(tmp_path):
    """A benchmark method that hangs is killed at its cap, the next method still runs; a step that
    overruns its cap is killed and recorded as such; the report comes out regardless.

    The verdict does not depend on the machine's speed: only the deliberately hanging method and
    step get tiny caps (3 s and 6 s, which they overrun by construction); every step and method that
    must finish gets caps far above what it needs on a loaded machine, and nothing asserts a time."""
    env = _env(tmp_path, GAPOPS_GPU_CHECK_STEPS="env,bench,max_n", GAPOPS_GPU_CHECK_BUDGET="1800",
               GAPOPS_CAP_ENV="300", GAPOPS_CAP_BENCH="1200", GAPOPS_BENCH_METHOD_CAP="600",
               GAPOPS_BENCH_METHODS="naive_input_dtype,naive,gapops_cuda,inf_cl",
               GAPOPS_BENCH_CASES="32x8xbf16",
               GAPOPS_BENCH_TEST_HANG="naive_input_dtype:32x8xbf16",
               GAPOPS_BENCH_METHOD_CAPS="naive_input_dtype=3",
               GAPOPS_CAP_MAX_N="6", GAPOPS_GPU_CHECK_TEST_HANG="max_n")
    p = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=3000)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    steps = _steps(tmp_path)
    assert steps["env"]["status"] == "ok", out[-3000:]
    # one method timed out, so the bench step reports a failure, but it ran to its end
    assert steps["bench"]["status"] == "failed (exit 1)", out[-3000:]
    assert steps["max_n"]["status"] == "timeout", out[-3000:]  # the hanging step, killed at...
    assert float(steps["max_n"]["cap"]) == 6  # ...its own cap
    assert steps["correct_triton"]["status"] == "not selected"
    assert steps["total"]["status"] == "done"

    md = (tmp_path / "out" / "gpu_check.md").read_text()
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0
    assert "GPU check: cpu (dry run)" in md
    rows = {r["method"]: r for r in data["bench"] if r.get("status") != "started"}
    assert rows["naive_input_dtype"]["status"].startswith("timeout: method killed at its 3 s cap")
    assert rows["naive"]["status"] == "ok" and rows["naive"]["ms"] > 0
    assert rows["naive"]["tflops"] > 0 and rows["naive"]["mm_tflops"] > 0
    assert rows["gapops_cuda"]["status"].startswith("skipped: dry run")
    assert rows["inf_cl"]["status"].startswith("unavailable")
    assert "| naive | " in md and "timeout: method killed" in md
    assert data["env"]["device"] == "cpu (dry run)" and data["env"]["torch"]


def test_budget_spent_skips_steps(tmp_path):
    env = _env(tmp_path, GAPOPS_GPU_CHECK_STEPS="env", GAPOPS_GPU_CHECK_BUDGET="1")
    p = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    steps = _steps(tmp_path)
    assert steps["env"]["status"] == "skipped (budget)"
    assert (tmp_path / "out" / "gpu_check.md").exists()


def _load_report():
    sys.path.insert(0, BENCH)
    try:
        import gpu_report
    finally:
        sys.path.remove(BENCH)
    return gpu_report


def test_report_from_partial_results(tmp_path):
    """The report reads whatever subset of the step files exists, including cut-off lines."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "env.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0",
                                               "mode": "quick"}))
    (work / "steps.jsonl").write_text(
        '{"step": "env", "status": "ok", "seconds": 4.0, "cap": 30, "note": ""}\n'
        '{"step": "bench", "status": "timeout", "seconds": 200, "cap": 200, "note": ""}\n')
    ok = {"kind": "correctness", "variant": "triton:fused", "dtype": "bf16", "N": 4096, "d": 768,
          "deterministic": False, "err_loss": 1e-4, "err_dx": 3e-3, "err_dy": 3e-3, "err_ds": 1e-3,
          "tol_loss": 1e-2, "tol_grad": 2e-2, "ok": True, "first_tuned_call": True}
    bad = dict(ok, deterministic=True, err_dx=0.5, ok=False, bitwise_repeat=False,
               first_tuned_call=False)
    (work / "correctness.jsonl").write_text(
        json.dumps(ok) + "\n" + json.dumps(bad) + "\n" +
        json.dumps({"kind": "correctness", "variant": "cuda", "ok": False,
                    "status": "unavailable: not built"}) + "\n")
    case = {"kind": "bench", "N": 32768, "d": 768, "dtype": "bf16"}
    (work / "bench.jsonl").write_text(
        json.dumps(dict(case, method="gapops_triton_fused", status="started")) + "\n" +
        json.dumps(dict(case, method="gapops_triton_fused", status="ok", ms=20.0, ms_min=19.5,
                        tflops=330.0, mm_tflops=660.0, frac_of_mm=0.5, first_call_s=12.0,
                        peak_bytes=3 * 2**30, extra_bytes=2**29)) + "\n" +
        json.dumps(dict(case, method="naive", status="started")) + "\n" +
        json.dumps(dict(case, method="naive_compile", status="OOM")) + "\n" +
        '{"kind": "bench", "method": "open_clip", "N": 32')  # cut off by a kill
    gpu_report = _load_report()
    md_path, js_path = tmp_path / "r.md", tmp_path / "r.json"
    assert gpu_report.main(["--work", str(work), "--md", str(md_path), "--json", str(js_path),
                            "--quiet"]) == 0
    md = md_path.read_text()
    assert "GPU check: NVIDIA H100 80GB HBM3" in md
    assert "| gapops_triton_fused | 20.00 | 330 | 50% | 12.0 | 3.00 | 0.50 | ok |" in md
    assert "did not finish" in md  # naive: started, never finished
    assert "| naive_compile |" in md and "OOM" in md
    assert "FAILED triton:fused N=4096 d=768 bf16 det" in md and "NOT bit-identical" in md
    assert "cuda: unavailable: not built" in md
    assert "| bench | timeout |" in md
    data = json.loads(js_path.read_text())
    assert data["device"] == "NVIDIA H100 80GB HBM3" and len(data["bench"]) == 4


def _load_bench():
    sys.path.insert(0, BENCH)
    try:
        import bench_gpu
    finally:
        sys.path.remove(BENCH)
    return bench_gpu


def test_cases_per_loss_and_quick_peers():
    """A method runs the cases of its loss; in QUICK the peers run the bf16 cases only."""
    b = _load_bench()
    cases = ["32768x768xbf16", "16384x512xtf32", "sig:65536x768xbf16"]
    assert b.parse_case("sig:65536x768xbf16") == ("sigmoid", 65536, 768, "bf16")
    assert b.cases_for("gapops_cuda", cases, True) == cases[:2]
    assert b.cases_for("naive", cases, True) == cases[:2]
    assert b.cases_for("memeff", cases, True) == cases[:1]
    assert b.cases_for("memeff", cases, False) == cases[:2]
    assert b.cases_for("sigmoid_siglip_kernel", cases, True) == cases[2:]
    assert b.cases_for("sigmoid_gapops_cuda", cases, True) == cases[2:]
    with pytest.raises(ValueError, match="dtype"):
        b.parse_case("sig:8x8xint8")


def test_strip_model_arithmetic():
    """docs/cuda.md's model: 4 products at the mm rate + 22 B per logit at the copy bandwidth."""
    b = _load_bench()
    n, d = 32768, 768
    t, frac = b.strip_model(n, d, mm_tflops=700.0, bw_gbs=4000.0)
    products = 8.0 * n * n * d / 700e12
    memory = 22.0 * n * n / 4000e9
    assert t == pytest.approx(products + memory, rel=1e-12)
    assert frac == pytest.approx(products / (products + memory), rel=1e-12)
    assert 0.5 < frac < 0.8  # the bf16 H100/H200 figures of docs/cuda.md are in this range


def test_auto_table_rows_from_report_and_update(tmp_path):
    """The report ranks gapops' GPU backends per case; update_auto_table.py writes them into a
    copy of gapops/_auto_table.py, whose choose() then follows them; a dry run's rows are refused."""
    gpu_report = _load_report()
    case = {"kind": "bench", "N": 32768, "d": 768, "dtype": "bf16"}
    rows = [dict(case, method="gapops_triton_fused", status="ok", ms=30.0),
            dict(case, method="gapops_triton_gstrip", status="ok", ms=20.0),
            dict(case, method="gapops_cuda", status="ok", ms=25.0, model_ms=24.0,
                 model_frac_of_mm=0.6, mm_tflops=700.0, copy_gbs=4000.0, frac_of_mm=0.55),
            dict(case, method="naive", status="ok", ms=5.0),  # not a gapops backend
            dict(case, method="gapops_cuda_det", status="ok", ms=1.0),  # det rows left out
            dict(case, loss="sigmoid", method="sigmoid_gapops_cuda", status="ok", ms=9.0),
            dict(case, loss="sigmoid", method="sigmoid_gapops_triton", status="timeout")]
    auto = gpu_report.auto_table_rows(rows, "NVIDIA H200", "2026-12-03 20:00 UTC")
    assert [(r["loss"], r["ranking"]) for r in auto] == [("softmax", ["triton", "cuda"]),
                                                        ("sigmoid", ["cuda"])]
    assert auto[0]["ms"] == {"triton": 20.0, "cuda": 25.0}
    lines = gpu_report.model_lines(rows)
    assert len(lines) == 2 and "model 24.00 ms = 60% of mm" in lines[0]
    assert "measured 25.00 ms = 55% of mm" in lines[0]

    table = tmp_path / "_auto_table.py"
    shutil.copy(os.path.join(ROOT, "gapops", "_auto_table.py"), table)
    report = tmp_path / "gpu_check.json"
    report.write_text(json.dumps({"device": "NVIDIA H200", "mode": "quick", "date": "x",
                                  "auto_table": auto}))
    upd = [sys.executable, os.path.join(BENCH, "update_auto_table.py"), str(report),
           "--table", str(table)]
    subprocess.run(upd, check=True, capture_output=True)
    subprocess.run(upd, check=True, capture_output=True)  # idempotent: same rows replaced
    ns = {}
    exec(table.read_text(), ns)
    assert len(ns["MEASURED"]) == 2
    assert ns["choose"](ns["MEASURED"], "softmax", "bf16", 40000, ("cuda", "triton")) == "triton"
    assert ns["choose"](ns["MEASURED"], "softmax", "fp16", 40000, ("cuda", "triton")) == "cuda"
    report.write_text(json.dumps({"device": "cpu (dry run)", "mode": "quick dry run",
                                  "auto_table": auto}))
    p = subprocess.run(upd, capture_output=True, text=True)
    assert p.returncode == 2 and "dry run" in p.stderr
