"""Benchmark: the notebooks' training runs (each must take <= 3 s on the 2-core machine).

Run from the repository root::

    python -m benchmarks.bench_training

One function per task (``bench_<task>``); each trains its run(s) as the notebook does, a few
times, and prints the seconds per run (wall clock and CPU time of this process) with the
load average, since other processes competing for the cores slow everything down.
"""

from __future__ import annotations

import os
import time


def _report(label: str, fn, repeats: int = 3) -> None:
    fn()  # warm-up: first calls pay for torch's lazy initialisation
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"{label:<48} {min(walls):6.2f} s wall (best of {repeats}), "
          f"{min(cpus):6.2f} s CPU")


def bench_pronoun() -> None:
    """Chapter 1: W_Q, W_K, W_V learned for "He" -> its name (``utils.training.pronoun``)."""
    from utils.training import pronoun

    _report("ch1 pronoun, running sentences", lambda: pronoun.fit("running", seed=0))
    _report("ch1 pronoun, order, no positions", lambda: pronoun.fit("order", seed=0))
    _report("ch1 pronoun, order, sinusoidal positions",
            lambda: pronoun.fit("order", use_positions=True, seed=0))


def bench_translation() -> None:
    """Chapter 2: a tiny encoder-decoder learns to translate (``utils.training.translation``)."""
    from utils.training import translation

    _report("ch2 translation, 200 steps (as in the notebook)", lambda: translation.fit(seed=0))


def bench_language() -> None:
    """Chapter 4: a tiny causal language model, with and without the causal mask
    (``utils.training.language``)."""
    from utils.training import language

    _report("ch4 language, causal mask (as in the notebook)", lambda: language.fit(True, seed=0))
    _report("ch4 language, no mask (as in the notebook)", lambda: language.fit(False, seed=0))


def bench_heads() -> None:
    """Chapter 3: heads learn previous word and first word (``utils.training.heads``)."""
    from utils.training import heads

    for n_heads in (1, 2, 4):
        _report(f"ch3 heads, H = {n_heads}, {heads.STEPS} steps (as in the notebook)",
                lambda n_heads=n_heads: heads.fit(n_heads, seed=0))


def bench_longrange() -> None:
    """Chapter 5: copy the first token with dense, window (1 and 2 layers) and window + global
    attention (``utils.training.longrange``)."""
    from utils.training import longrange

    for pattern, layers in (("dense", 1), ("window", 1), ("window", 2), ("window+global", 1)):
        _report(f"ch5 longrange, {pattern} x {layers} (as in the notebook)",
                lambda p=pattern, n=layers: longrange.fit(p, n, seed=0))


def bench_scores() -> None:
    """Chapter 6: five score functions x d_k 16 and 256 in one run, with SGD and with Adam
    (``utils.training.scores``)."""
    from utils.training import scores

    for optimizer in ("sgd", "adam"):
        _report(f"ch6 scores, {optimizer}, 10 layers (as in the notebook)",
                lambda o=optimizer: scores.fit(o, seed=0))


def bench_pointer() -> None:
    """Chapter 7: the pointer task read four ways (``utils.training.pointer``)."""
    from utils.training import pointer

    for method in pointer.METHODS:
        _report(f"ch7 pointer, {method}, {pointer.STEPS} steps (as in the notebook)",
                lambda m=method: pointer.fit(m, seed=0))


def main() -> None:
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, fn in list(globals().items()):
        if name.startswith("bench_") and callable(fn):
            fn()
    print(f"load average after:  {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
