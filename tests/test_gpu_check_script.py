"""benchmarks/gpu_check.sh without a GPU: its dry run (caps, partial results, report) and its pieces.

The GPU check must fit a 15-minute lease on a machine nobody can rehearse on, so what can be proven
on a CPU is proven here: every step runs under its own cap and the shared deadline, a step or a
benchmark method that hangs is killed at its cap while the rest carry on, and the Markdown + JSON
report comes out of whatever the steps left. About 30 s on 2 cores.
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
    overruns its cap is killed and recorded as such; the report comes out regardless."""
    env = _env(tmp_path, GAPOPS_GPU_CHECK_STEPS="env,bench,max_n", GAPOPS_GPU_CHECK_BUDGET="120",
               GAPOPS_BENCH_METHODS="naive_input_dtype,naive,gapops_cuda,inf_cl",
               GAPOPS_BENCH_CASES="32x8xbf16",
               GAPOPS_BENCH_TEST_HANG="naive_input_dtype:32x8xbf16", GAPOPS_BENCH_METHOD_CAP="20",
               GAPOPS_CAP_MAX_N="6", GAPOPS_GPU_CHECK_TEST_HANG="max_n")
    p = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    steps = _steps(tmp_path)
    assert steps["env"]["status"] == "ok", out[-3000:]
    # one method timed out, so the bench step reports a failure, but it ran to its end
    assert steps["bench"]["status"] == "failed (exit 1)", out[-3000:]
    assert float(steps["bench"]["seconds"]) < float(steps["bench"]["cap"])
    assert steps["max_n"]["status"] == "timeout", out[-3000:]
    assert float(steps["max_n"]["seconds"]) < 6 + 5 + 3  # cap + timeout's -k grace + slack
    assert steps["correct_triton"]["status"] == "not selected"
    assert steps["total"]["status"] == "done"

    md = (tmp_path / "out" / "gpu_check.md").read_text()
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0
    assert "GPU check: cpu (dry run)" in md
    rows = {r["method"]: r for r in data["bench"] if r.get("status") != "started"}
    assert rows["naive_input_dtype"]["status"].startswith("timeout: method killed at its 20 s cap")
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
