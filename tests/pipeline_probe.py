"""A probe kernel for tests/test_gpu_static.py: a minimal product K loop in the shape of the
shipped main loops. Imported with TRITON_INTERPRET unset, so that it is a compilable jit
function (conftest switches the interpreter on for everything else)."""
import triton
import triton.language as tl


# BARRIER=True puts a CTA barrier inside the K loop: how the forward lost its pipeline (issue 16)
@triton.jit
def k_loop_kernel(a_ptr, b_ptr, out_ptr, d, sa0, sb0, BM: tl.constexpr, BN: tl.constexpr,
                  BK: tl.constexpr, BARRIER: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.arange(0, BN)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        a = tl.load(a_ptr + rows[:, None].to(tl.int64) * sa0 + ks[None, :])
        b = tl.load(b_ptr + cols[None, :].to(tl.int64) * sb0 + ks[:, None])
        acc = tl.dot(a, b, acc)
        if BARRIER:
            tl.debug_barrier()
    tl.store(out_ptr + rows[:, None] * BN + cols[None, :], acc)
