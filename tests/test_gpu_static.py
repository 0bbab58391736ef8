"""CI test of benchmarks/gpu_static.py: every shipped Triton config compiles for sm_90 with no
spill, wgmma in the hot kernels, no GPU-scope fence in a loop and no unordered global
read-back; and the check does fail on a config that spills. No GPU needed (ptxas and cuobjdump
come with Triton's NVIDIA backend)."""
import os
import subprocess
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
                          capture_output=True, text=True, env=env, timeout=900)


def test_shipped_configs_pass():
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 with problems" in out.stdout


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
    assert facts == dict(wgmma=True, spill_insns=1, fences=2, fences_in_loops=1)
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
    out = run("--only", "combine", "--cuda-so", _built_cuda_extension())
    assert out.returncode == 0, out.stdout + out.stderr
    for kernel in gpu_static.CUDA_KERNELS:
        assert kernel in out.stdout, out.stdout


def test_cuda_verdicts():
    """What fails a CUDA kernel: a fence anywhere, scalar loads in an epilogue, a spill."""
    import gpu_static as g
    row = dict(kernel="sigmoid_epilogue<__half, float>", kind="cuda", cls="-", stack=0, local=0,
               spill_insns=0, wgmma=False, fences=0, fences_in_loops=0, unordered_loops=0,
               load128=2)
    assert g.cuda_problems(row) == []
    assert g.cuda_problems(dict(row, load128=0)) == ["epilogue without 128-bit global loads"]
    assert g.cuda_problems(dict(row, kernel="row_lse_kernel<float>", load128=0)) == []
    assert g.cuda_problems(dict(row, fences=1)) == ["1 GPU-scope fences"]
    assert "spills" in g.cuda_problems(dict(row, stack=8))[0]
    assert len(g._LDG128.findall("LDG.E.128 R4, desc[UR4][R2.64] ;\nLDG.E.128.CONSTANT R8, "
                                 "[R2] ;\nLDG.E.64 R2, [R4] ;")) == 2
