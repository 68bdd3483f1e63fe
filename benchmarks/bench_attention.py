"""Benchmark: `utils` attention against PyTorch's, and sliding-window against dense attention.

Run from the repository root::

    python -m benchmarks.bench_attention            # full run, about 1-2 minutes
    python -m benchmarks.bench_attention --quick    # small sizes, a few seconds
    python -m benchmarks.bench_attention --output bench.md

Setting: float32, batch 1, 4 heads of size 64, on the CPU, with torch's default thread count.

* Section 1: ``utils.attention.scaled_dot_product_attention`` (which returns its weights, so
  it builds the N x N matrix) against ``torch.nn.functional.scaled_dot_product_attention``,
  and the time to write one fresh N x N float32 tensor: the floor for any implementation
  that returns the weights (a fresh allocation of that size costs page faults).
* Section 2: ``utils.sparse.sliding_window_attention`` (window 64) against dense unmasked
  torch SDPA, plus the peak memory of the materialised dense computation (``utils``).

How it measures:

* Time: one warm-up call, then the median of a few calls timed with ``time.perf_counter``,
  the implementations compared at one N timed in turn (A, B, A, B, ...) so that changes in
  the machine's load hit them alike.
* Peak memory: the peak resident memory (RSS) that one call adds, its output included and
  its inputs excluded. On Linux, after a small warm-up call, freed heap memory is handed
  back to the OS (``malloc_trim``), the kernel's peak-RSS counter is reset
  (``/proc/self/clear_refs``) and the call's peak is ``VmHWM`` minus ``VmRSS`` before it.
  Elsewhere it falls back to the growth of ``ru_maxrss``. The full run measures every case
  in a fresh subprocess so that no case inherits another's heap; ``--quick`` measures
  in-process.

The timings are only as quiet as the machine: other processes competing for the cores slow
everything down (torch's threads wait for each other), so the load average before and after
the run is printed with the table. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
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
    # the least that returning the weights costs: writing one fresh (..., N, N) float32 tensor
    "fresh_weights": lambda q, k, v: torch.empty(*q.shape[:-1], k.shape[-2]).fill_(1.0),
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


def _inputs(n: int):
    g = torch.Generator().manual_seed(n)
    return tuple(torch.randn(1, HEADS, n, D_HEAD, generator=g) for _ in range(3))


def measure_peak(impl: str, n: int) -> int:
    """Peak resident bytes one call of ``impl`` adds at length ``n`` (warm-up at N = 256)."""
    fn, (q, k, v) = IMPLS[impl], _inputs(n)
    small = tuple(x[..., : min(n, 256), :] for x in (q, k, v))
    return peak_memory(lambda: fn(q, k, v), warm_up=lambda: fn(*small))


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OthersCpu:
    """Share of the machine's CPU time that other processes used while in the block."""

    def __enter__(self):
        self.busy, self.own, self.wall = _busy_seconds(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = _busy_seconds()
        if busy is None or self.busy is None:
            self.share = None
            return
        wall = time.perf_counter() - self.wall
        others = (busy - self.busy) - (_own_cpu() - self.own)
        self.share = min(max(others / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def time_interleaved(impls: list[str], n: int) -> dict[str, float]:
    """Median wall time of each implementation at length ``n``.

    After one warm-up call each, the implementations are timed in turn (A, B, C, A, B, C,
    ...) so that a change in the machine's load hits them alike. Repeats: 5 for calls under
    0.2 s, 3 under 1.5 s, else 2.
    """
    q, k, v = _inputs(n)
    repeats = {}
    for impl in impls:
        start = time.perf_counter()
        IMPLS[impl](q, k, v)
        once = time.perf_counter() - start
        repeats[impl] = 5 if once < 0.2 else 3 if once < 1.5 else 2
    times = {impl: [] for impl in impls}
    for r in range(max(repeats.values())):
        for impl in impls:
            if r < repeats[impl]:
                start = time.perf_counter()
                IMPLS[impl](q, k, v)
                times[impl].append(time.perf_counter() - start)
    return {impl: statistics.median(ts) for impl, ts in times.items()}


def _peak_in_subprocess(impl: str, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(n)],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {impl} N={n} failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


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


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{share * 100:.0f}%"


def report(results: dict, sizes: dict, method: str, info: list[str], busy: dict) -> str:
    def get(impl, n):
        return results.get((impl, n))

    lines = ["# Attention benchmark", "", *info, f"- Peak memory: {method}", ""]
    lines += [
        "## 1. `utils.attention.scaled_dot_product_attention` vs torch SDPA",
        "",
        "| N | torch SDPA (ms) | utils (ms) | utils / SDPA time | fresh N × N tensor (ms) "
        "| torch SDPA peak (MiB) | utils peak (MiB) | others' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes["dense"]:
        t, u, f = get("torch_sdpa", n), get("utils_dense", n), get("fresh_weights", n)
        lines.append(f"| {n} | {_ms(t)} | {_ms(u)} | {_ratio(u['time'], t['time'])} | {_ms(f)} "
                     f"| {_mib(t)} | {_mib(u)} | {_pct(busy.get(n))} |")
    lines += [
        "",
        "## 2. `utils.sparse.sliding_window_attention` (window 64) vs dense",
        "",
        "| N | dense SDPA (ms) | sliding (ms) | speed-up | dense SDPA peak (MiB) "
        "| sliding peak (MiB) | SDPA / sliding memory | materialised dense peak (MiB) "
        "| materialised / sliding memory | others' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes["sliding"]:
        t, s, u = get("torch_sdpa", n), get("sliding", n), get("utils_dense", n)
        lines.append(
            f"| {n} | {_ms(t)} | {_ms(s)} | {_ratio(t and t['time'], s['time'])} "
            f"| {_mib(t)} | {_mib(s)} | {_ratio(t and t['peak'], s['peak'])} "
            f"| {_mib(u)} | {_ratio(u and u['peak'], s['peak'])} | {_pct(busy.get(n))} |"
        )
    lines += [
        "",
        "*others' CPU*: share of the machine's CPU time used by other processes while that "
        "row was timed. Above a few percent the timings are unreliable: torch's threads wait "
        "for each other at every operation, which hurts code made of many small operations "
        "(sliding) far more than one fused kernel (SDPA).",
    ]
    noisy = [n for n, share in busy.items() if share is not None and share > 0.05]
    if noisy:
        lines += ["", f"**Warning: other processes were busy while N = "
                  f"{', '.join(map(str, noisy))} were timed; rerun on an idle machine.**"]
    lines += ["", "## Targets", ""]
    n_dense = 2048 if 2048 in sizes["dense"] else sizes["dense"][-1]
    t, u = get("torch_sdpa", n_dense), get("utils_dense", n_dense)
    r = u["time"] / t["time"]
    lines.append(f"- utils dense within 1.5× of SDPA's time at N = {n_dense}: {r:.2f}× — "
                 + ("met" if r <= 1.5 else "**not met**"))
    f = get("fresh_weights", n_dense)
    if f is not None:
        lines.append(f"  - writing the fresh N × N weights tensor alone takes {f['time'] * 1e3:.1f} ms "
                     f"= {f['time'] / t['time']:.2f}× SDPA's whole call: the floor for any "
                     "implementation that returns the weights")
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

    if args.worker:  # measure one case's peak memory and print it
        impl, n = args.worker
        print(measure_peak(impl, int(n)))
        return

    sizes = QUICK if args.quick else FULL
    impls_at = {}  # N -> the implementations measured at N
    for n in sorted(set(sizes["dense"]) | set(sizes["sliding"])):
        impls = ["torch_sdpa"]
        if n in sizes["dense"] or n <= MAX_MATERIALISED_N:
            impls.append("utils_dense")
        if n in sizes["dense"]:
            impls.append("fresh_weights")
        if n in sizes["sliding"]:
            impls.append("sliding")
        impls_at[n] = impls
    reset = _can_reset_peak()
    method = ("peak RSS added by one call (VmHWM after resetting it, minus VmRSS before; "
              "output included, inputs excluded)" if reset else
              "growth of ru_maxrss during one call after a small warm-up")
    method += ", each case in a fresh subprocess" if not args.quick else ", in-process"
    info = machine_info()  # before the run, so the load is the machine's own
    start = time.perf_counter()
    results, busy = {}, {}
    for n, impls in impls_at.items():
        with OthersCpu() as others:
            times = time_interleaved(impls, n)
        busy[n] = others.share
        for impl in impls:
            peak = measure_peak(impl, n) if args.quick else _peak_in_subprocess(impl, n)
            results[(impl, n)] = r = {"time": times[impl], "peak": peak}
            print(f"  {impl:12s} N={n:6d}  {r['time'] * 1e3:9.1f} ms  {peak / MIB:8.1f} MiB",
                  file=sys.stderr, flush=True)
            _release_free_heap()
    text = report(results, sizes, method, info, busy)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    text += (f"\n\nTotal benchmark time: {time.perf_counter() - start:.0f} s; "
             f"load average after the run: {load}.\n")
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
