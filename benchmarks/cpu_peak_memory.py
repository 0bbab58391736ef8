"""Peak extra memory of one forward+backward, each case in a fresh subprocess.

    python benchmarks/cpu_peak_memory.py NAME N D    -> prints extra MiB over the inputs
Extra = the peak resident set (VmHWM) during the step minus the resident set just before it, with
the peak reset to the current size first (Linux: `echo 5 > /proc/self/clear_refs`), so memory that
made the inputs and was freed again is not counted as headroom. A tiny step of the same method runs
first, so allocator and library start-up are not counted. Falls back to getrusage's max RSS (which
cannot be reset, and so can under-count) where clear_refs is not available.
"""
import resource
import sys


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(name: str, n: int, d: int) -> None:
    from cpu_cases import case
    step, make_inputs = case(name)
    if step is None:
        print("nan")
        return
    step(*make_inputs(64, d))
    inputs = make_inputs(n, d)
    if _reset_peak():
        base = _status_mib("VmRSS")
        step(*inputs)
        print(f"{_status_mib('VmHWM') - base:.1f}")
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        step(*inputs)
        print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
