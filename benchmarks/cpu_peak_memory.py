"""Peak extra memory of one forward+backward, each case in a fresh subprocess (max RSS).

    python benchmarks/cpu_peak_memory.py NAME N D    -> prints extra MiB over the inputs
Extra = max RSS after the step minus max RSS once inputs exist and torch is warm (a tiny step of
the same method runs first, so allocator and library start-up are not counted).
"""
import resource
import sys


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(name: str, n: int, d: int) -> None:
    from cpu_cases import contestants, make_inputs
    step = contestants()[name]
    if step is None:
        print("nan")
        return
    step(*make_inputs(64, d))
    x, y, s = make_inputs(n, d)
    base = _max_rss_mib()
    step(x, y, s)
    print(f"{_max_rss_mib() - base:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
