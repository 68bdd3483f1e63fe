"""Benchmark: `utils` attention against PyTorch's, and sliding-window against dense attention.

Run from the repository root::

    python -m benchmarks.bench_attention            # full run, about 1-2 minutes
    python -m benchmarks.bench_attention --quick    # small sizes, a few seconds
    python -m benchmarks.bench_attention --output bench.md

Setting: float32, batch 1, 4 heads of size 64, on the CPU, with torch's default thread count.

* Section 1: ``utils.attention.scaled_dot_product_attention`` (which returns its weights, so
  it builds the N x N matrix) against ``torch.nn.functional.scaled_dot_product_attention``.
* Section 2: ``utils.sparse.sliding_window_attention`` (window 64) against dense unmasked
  torch SDPA, plus the peak memory of the materialised dense computation (``utils``).

How it measures:

* Time: one warm-up call, then the median of a few calls timed with ``time.perf_counter``.
* Peak memory: the peak resident memory (RSS) that one call adds, its output included and
  its inputs excluded. On Linux, after the warm-up, freed heap memory is handed back to the
  OS (``malloc_trim``), the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``)
  and the call's peak is ``VmHWM - VmRSS`` before it. Elsewhere it falls back to the growth of
  ``ru_maxrss`` with a small warm-up. The full run measures every case in a fresh
  subprocess so that no case inherits another's heap; ``--quick`` measures in-process.

The timings are only as quiet as the machine: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from utils.attention import scaled_dot_product_attention  # noqa: E402
from utils.sparse import sliding_window_attention  # noqa: E402

HEADS, D_HEAD, WINDOW = 4, 64, 64
MIB = 2**20

IMPLS = {
    "torch_sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    "utils_dense": lambda q, k, v: scaled_dot_product_attention(q, k, v),
    "sliding": lambda q, k, v: sliding_window_attention(q, k, v, WINDOW),
}

FULL = {"dense": (512, 1024, 2048), "sliding": (512, 1024, 2048, 4096, 8192, 16384)}
QUICK = {"dense": (256, 512, 1024), "sliding": (512, 1024, 2048)}
# The materialised dense computation holds about two float32 (H, N, N) tensors at once:
# 8 GiB at N = 16384. Skip it above this size.
MAX_MATERIALISED_N = 8192


# --- memory -------------------------------------------------------------------------------


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def _release_free_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def peak_memory(fn, warm_up=None) -> int:
    """Peak resident bytes that ``fn()`` adds (its result included), measured as above.

    ``warm_up`` (default: ``fn`` itself) is called first so that lazily loaded code and
    thread pools are not counted.
    """
    (warm_up or fn)()
    _release_free_heap()
    if _can_reset_peak():
        base = _proc_status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        result = fn()
        peak = _proc_status("VmHWM") - base
    else:  # ru_maxrss only grows: honest only if the warm-up was smaller than fn
        base = _maxrss_bytes()
        result = fn()
        peak = _maxrss_bytes() - base
    del result
    return max(peak, 0)


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(impl: str, n: int, repeats: int | None = None) -> dict:
    """Time and peak memory of one implementation at sequence length ``n``."""
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, HEADS, n, D_HEAD, generator=g) for _ in range(3))
    fn = IMPLS[impl]

    def call():
        return fn(q, k, v)

    if _can_reset_peak():
        peak = peak_memory(call)
    else:
        small = q[..., : min(n, 128), :], k[..., : min(n, 128), :], v[..., : min(n, 128), :]
        peak = peak_memory(call, warm_up=lambda: fn(*small))
    if repeats is None:  # a few repeats, fewer for slow cases
        start = time.perf_counter()
        call()
        once = time.perf_counter() - start
        repeats = 5 if once < 0.2 else 3 if once < 1.5 else 2
    return {"impl": impl, "n": n, "time": median_time(call, repeats), "peak": peak,
            "repeats": repeats}


def _measure_in_subprocess(impl: str, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(n)],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl} N={n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- report -------------------------------------------------------------------------------


def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"- Machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads",
        f"- Load average (1, 5, 15 min) before the run: {load}",
        f"- Setting: float32, batch 1, {HEADS} heads of {D_HEAD}, window {WINDOW} for sliding",
    ]


def _ms(r: dict | None) -> str:
    return "—" if r is None else f"{r['time'] * 1e3:.1f}"


def _mib(r: dict | None) -> str:
    return "—" if r is None else f"{r['peak'] / MIB:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "—"
    return "∞" if b == 0 else f"{a / b:.1f}×"


def report(results: dict, sizes: dict, method: str, info: list[str]) -> str:
    def get(impl, n):
        return results.get((impl, n))

    lines = ["# Attention benchmark", "", *info, f"- Peak memory: {method}", ""]
    lines += [
        "## 1. `utils.attention.scaled_dot_product_attention` vs torch SDPA",
        "",
        "| N | torch SDPA (ms) | utils (ms) | utils / SDPA time | torch SDPA peak (MiB) "
        "| utils peak (MiB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes["dense"]:
        t, u = get("torch_sdpa", n), get("utils_dense", n)
        lines.append(f"| {n} | {_ms(t)} | {_ms(u)} | {_ratio(u['time'], t['time'])} "
                     f"| {_mib(t)} | {_mib(u)} |")
    lines += [
        "",
        "## 2. `utils.sparse.sliding_window_attention` (window 64) vs dense",
        "",
        "| N | dense SDPA (ms) | sliding (ms) | speed-up | dense SDPA peak (MiB) "
        "| sliding peak (MiB) | SDPA / sliding memory | materialised dense peak (MiB) "
        "| materialised / sliding memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes["sliding"]:
        t, s, u = get("torch_sdpa", n), get("sliding", n), get("utils_dense", n)
        lines.append(
            f"| {n} | {_ms(t)} | {_ms(s)} | {_ratio(t and t['time'], s['time'])} "
            f"| {_mib(t)} | {_mib(s)} | {_ratio(t and t['peak'], s['peak'])} "
            f"| {_mib(u)} | {_ratio(u and u['peak'], s['peak'])} |"
        )
    lines += ["", "## Targets", ""]
    n_dense = 2048 if 2048 in sizes["dense"] else sizes["dense"][-1]
    t, u = get("torch_sdpa", n_dense), get("utils_dense", n_dense)
    r = u["time"] / t["time"]
    lines.append(f"- utils dense within 1.5× of SDPA's time at N = {n_dense}: {r:.2f}× — "
                 + ("met" if r <= 1.5 else "**not met**"))
    n_long = 8192 if 8192 in sizes["sliding"] else sizes["sliding"][-1]
    t, s, u = get("torch_sdpa", n_long), get("sliding", n_long), get("utils_dense", n_long)
    speed = t["time"] / s["time"]
    lines.append(f"- sliding ≥ 10× faster than dense SDPA at N = {n_long}: {speed:.1f}× — "
                 + ("met" if speed >= 10 else "**not met**"))
    mem = t["peak"] / max(s["peak"], 1)
    lines.append(f"- sliding ≥ 5× less peak memory than dense SDPA at N = {n_long}: {mem:.2f}× — "
                 + ("met" if mem >= 5 else "**not met**"))
    if u is not None:
        mem_u = u["peak"] / max(s["peak"], 1)
        lines.append(f"  - against the materialised dense computation: {mem_u:.0f}× less — "
                     + ("met" if mem_u >= 5 else "**not met**"))
    lines += [
        "",
        "Note: on the CPU, torch's SDPA is a fused, FlashAttention-style kernel: it never holds "
        "the N × N scores either, so its memory also grows linearly with N (mostly its output). "
        "It still does O(N²) work, which is where sliding-window attention wins. The N × N "
        "memory shows in the materialised computation (`utils`, which also returns the weights).",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, in-process, seconds")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # measure one case and print it as JSON
        impl, n = args.worker
        print(json.dumps(measure(impl, int(n))))
        return

    sizes = QUICK if args.quick else FULL
    cases = [(impl, n) for n in sizes["dense"] for impl in ("torch_sdpa", "utils_dense")]
    cases += [("torch_sdpa", n) for n in sizes["sliding"] if n not in sizes["dense"]]
    cases += [("utils_dense", n) for n in sizes["sliding"]
              if n not in sizes["dense"] and n <= MAX_MATERIALISED_N]
    cases += [("sliding", n) for n in sizes["sliding"]]
    reset = _can_reset_peak()
    method = ("peak RSS added by one call (VmHWM after resetting it, minus VmRSS before; "
              "output included, inputs excluded)" if reset else
              "growth of ru_maxrss during one call after a small warm-up")
    method += ", each case in a fresh subprocess" if not args.quick else ", in-process"
    info = machine_info()  # before the run, so the load is the machine's own
    start = time.perf_counter()
    results = {}
    for impl, n in cases:
        r = measure(impl, n, repeats=3) if args.quick else _measure_in_subprocess(impl, n)
        results[(impl, n)] = r
        print(f"  {impl:12s} N={n:6d}  {r['time'] * 1e3:9.1f} ms  {r['peak'] / MIB:8.1f} MiB",
              file=sys.stderr, flush=True)
        if args.quick:
            _release_free_heap()
    text = report(results, sizes, method, info)
    text += f"\n\nTotal benchmark time: {time.perf_counter() - start:.0f} s.\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
