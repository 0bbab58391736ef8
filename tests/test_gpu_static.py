"""CI test of benchmarks/gpu_static.py: every shipped Triton kernel x config x variant compiles
for sm_90 with no spill, a pipelined main loop (async copies, >= 2 stages) of 16-byte loads,
wgmma in the 16-bit kernels, no GPU-scope fence and no unordered global read-back; and the check
does fail on a config that spills and on a main loop whose pipeline was lost. No GPU needed
(ptxas and cuobjdump come with Triton's NVIDIA backend)."""
import json
import os
import subprocess
import tempfile
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_static.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _have_backend():
    try:
        import gpu_static
        from triton.backends.compiler import GPUTarget  # noqa: F401
        return os.path.exists(gpu_static._tool("cuobjdump")) and \
            os.path.exists(gpu_static._tool("ptxas"))
    except Exception:  # noqa: BLE001 - any import problem means: cannot run here
        return False


pytestmark = pytest.mark.skipif(not _have_backend(),
                                reason="Triton's NVIDIA backend tools (ptxas, cuobjdump) missing")


def run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, SCRIPT, "--arch", "90", "--jobs", "2", *args],
                          capture_output=True, text=True, env=env, timeout=3600)


def test_shipped_configs_pass(tmp_path):
    out = run("--json", str(tmp_path / "rows.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 with problems" in out.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    hot = [r for r in rows if r["kind"] in ("fwd", "gstrip", "fused") and r["dtype"] != "fp64"]
    # every variant of every shipped config was compiled, and its verdicts are in the row
    import gpu_static as g
    from gapops.triton import configs
    want = sum(len(configs.CONFIGS[k].get(c, [])) * len(g._variants(c))
               for k in ("fwd", "gstrip", "fused") for c in ("16", "32"))
    assert len(hot) == want
    assert {(r["swap"], r["d"], r["dtype"], r["precision"]) for r in hot} >= {
        (s, d, t, p) for s in (False, True) for d in (768, 97)
        for t, p in (("fp16", "native"), ("bf16", "native"), ("fp32", "ieee"), ("fp32", "tf32"))}
    for r in hot:
        assert r["pipelined"] and r["stages_in_flight"] >= 2, r
        assert r["load_width"] == 16 and r["spills"] == 0 and r["fences"] == 0, r
        assert r["wgmma"] or r["dtype"] == "fp32", r


_PROBE = """
import json, sys
sys.path[:0] = sys.argv[2:4]
import gpu_static as g
import pipeline_probe
variant = dict(swap=False, n=32768, d=768, dtype="bf16", precision="native")
job = ("fwd", "16", dict(BM=64, BN=64, BK=64, BARRIER=sys.argv[1] == "1"), 4, 3, variant)
print(json.dumps(g.check_one(job, 90, fn=pipeline_probe.k_loop_kernel), default=str))
"""


@pytest.mark.parametrize("barrier", [False, True])
def test_a_lost_pipeline_fails(barrier):
    """The same K loop (tests/pipeline_probe.py) with and without a barrier in it: the check
    passes the first (async 16-byte copies, 3 stages) and fails the second as not pipelined.
    In a subprocess: the compiler cannot run where the interpreter has been switched on."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if barrier else "0",
                          os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "tests")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["wgmma"]
    if barrier:
        assert not row["pipelined"] and row["stages_in_flight"] < 2
        assert any("not pipelined" in p for p in row["problems"]), row["problems"]
    else:
        assert row["pipelined"] and row["stages_in_flight"] >= 2 and row["load_width"] == 16
        assert row["problems"] == [], row["problems"]


def test_a_spilling_config_fails():
    # fused backward, 128 x 128 tiles, 8 warps: 208 stack bytes of spill on sm_90 (measured
    # with this script; it was a shipped config before the pruning)
    extra = 'fused:16:{"BM": 128, "BN": 128, "BK": 64, "BD": 64, "num_warps": 8, "num_stages": 2}'
    out = run("--only", "combine", "--extra-config", extra)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "spills" in out.stdout


def test_readers():
    import gpu_static as g
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0020*/                   MEMBAR.ALL.GPU ;
        /*0030*/                   STL [R1], R2 ;
        /*0040*/              @P0 BRA `(.L_x_1) ;
        /*0050*/                   MEMBAR.SC.GPU ;
        /*0060*/                   EXIT ;
"""
    facts = g.sass_facts(sass)
    assert facts == dict(wgmma=True, spill_insns=1, fences=2, fences_in_loops=1,
                         async_copies=0, load_width=0)
    # async copies: the width moving the most bytes (operand tiles, not 4-byte mask copies)
    piped = sass.replace("MEMBAR.ALL.GPU", "LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64]") \
        .replace("STL [R1], R2", "LDGSTS.E [R3], desc[UR4][R6.64]")
    facts = g.sass_facts(piped)
    assert facts["async_copies"] == 2 and facts["load_width"] == 16
    # no async copies: the narrowest plain load in the product loop
    plain = sass.replace("MEMBAR.ALL.GPU", "LDG.E.U16 R8, desc[UR4][R4.64]")
    assert g.sass_facts(plain)["load_width"] == 2
    ttgir = "%a = ttg.local_alloc : () -> !ttg.memdesc<3x64x64xbf16, #shared, #smem, mutable>\n" \
            "%x = ttg.async_copy_global_to_local %p, %b : tensor<64x64x!tt.ptr<bf16>>\n"
    assert g.ttgir_pipeline(ttgir) == dict(ttgir_async_copies=1, stages_in_flight=3)
    assert g.ttgir_pipeline(ttgir.splitlines()[0]) == dict(ttgir_async_copies=0,
                                                           stages_in_flight=1)
    # the pre-issue-10 fused backward: a read-modify-write of dA inside the loop, no barrier
    ttir = """
    %r = scf.for %k = %c0 to %d step %c64 iter_args(%x = %x0) -> (tensor<64xf32>) : i32 {
      %old = tt.load %p : tensor<64x64x!tt.ptr<f32>>
      tt.store %p, %new : tensor<64x64x!tt.ptr<f32>>
      scf.yield %x : tensor<64xf32>
    }
    """
    assert g.ttir_unordered_loops(ttir) == 1
    assert g.ttir_unordered_loops(ttir.replace("tt.store", "ttg.barrier all\n tt.store")) == 0
    # a nest counts once, and a barrier in the outer loop (once per sweep) orders it
    nest = "scf.for %r = %c0 to %n step %c1 : i32 {\n" + ttir + "\n}\n"
    assert g.ttir_unordered_loops(nest) == 1
    assert g.ttir_unordered_loops(nest.replace("\n}\n", "\n ttg.barrier all\n}\n")) == 0
    usage = g.res_usage("Function fwd_kernel:\nREG:255 STACK:8 SHARED:0 LOCAL:0 CONSTANT[0]:1")
    assert usage == {"fwd_kernel": dict(REG=255, STACK=8, SHARED=0, LOCAL=0)}


def _built_cuda_extension():
    import gapops
    if not gapops.build_info().get("cuda"):
        return None
    import gapops._C as ext
    return ext.__file__


@pytest.mark.skipif(_built_cuda_extension() is None,
                    reason="the extension was built without CUDA kernels")
def test_cuda_kernels_of_the_built_extension():
    """The CUDA backend's SASS as built: every kernel of gpu_static.CUDA_KERNELS found, no spill,
    no GPU-scope fence, 128-bit global loads in the epilogues (their products run on cuBLAS)."""
    import gpu_static
    rows_file = os.path.join(tempfile.mkdtemp(), "rows.json")
    out = run("--only", "combine", "--cuda-so", _built_cuda_extension(), "--json", rows_file)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(rows_file) as f:
        found = {r["kernel"].split("<")[0] for r in json.load(f) if r["kind"] == "cuda"}
    for kernel in gpu_static.CUDA_KERNELS:
        assert kernel in found, (kernel, sorted(found))


def test_cuda_verdicts():
    """What fails a CUDA kernel: a fence anywhere, scalar loads in an epilogue, a spill."""
    import gpu_static as g
    row = dict(kernel="sigmoid_epilogue<__half, float>", kind="cuda", cls="-", stack=0, local=0,
               spill_insns=0, wgmma=False, fences=0, fences_in_loops=0, unordered_loops=0,
               load128=2)
    assert g.cuda_problems(row) == []
    assert g.cuda_problems(dict(row, load128=0)) == ["epilogue without 128-bit global loads"]
    assert g.cuda_problems(dict(row, kernel="row_lse_kernel<float>", load128=0)) == []
    assert g.cuda_problems(dict(row, fences=1)) == ["1 GPU-scope fences (0 inside loops)"]
    assert "spills" in g.cuda_problems(dict(row, stack=8))[0]
    assert len(g._LDG128.findall("LDG.E.128 R4, desc[UR4][R2.64] ;\nLDG.E.128.CONSTANT R8, "
                                 "[R2] ;\nLDG.E.64 R2, [R4] ;")) == 2
