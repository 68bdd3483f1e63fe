"""Instant, specific feedback on exercises.

A check runs the student's function on small seeded inputs and compares it with
the reference from ``utils``. When they differ it runs known buggy versions on
the same inputs: the first that reproduces the student's output names the likely
bug. The check prints one line and returns a :class:`CheckResult` (which displays
nothing, so the line is not repeated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Case", "CheckResult", "run_check"]

PASS, NOT_ATTEMPTED, FAIL = "pass", "not attempted", "fail"


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    """A float64 standard-normal tensor from its own seeded generator (check inputs)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@dataclass
class CheckResult:
    """The outcome of a check: ``status`` is "pass", "not attempted" or "fail";
    ``diagnosis`` names the bug found ("wrong_shape", "wrong_axis", ...) or is None."""

    name: str
    status: str
    message: str
    diagnosis: str | None = None

    def __bool__(self) -> bool:
        return self.status == PASS

    def _ipython_display_(self) -> None:  # the printed line is the feedback
        pass


@dataclass
class Case:
    """One input to a check: positional and keyword arguments."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def call(self, fn: Callable):
        return fn(*self.args, **self.kwargs)


def _as_tensors(out) -> tuple:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _compare(got, want, atol: float) -> str | None:
    """None if ``got`` matches ``want``, else a short reason with diagnosis key prefix."""
    got, want = _as_tensors(got), _as_tensors(want)
    if len(got) != len(want):
        return f"wrong_output|returned {len(got)} value(s), expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        where = f" (returned value {i + 1})" if len(want) > 1 else ""
        if not isinstance(w, torch.Tensor):  # a plain value (bool, int, str, ...)
            if g != w:
                return f"values|returned {g!r}{where}, expected {w!r}"
            continue
        if not isinstance(g, torch.Tensor):
            return f"wrong_output|returned a {type(g).__name__}{where}, expected a torch.Tensor"
        if g.shape != w.shape:
            return (f"wrong_shape|wrong output shape{where}: expected {tuple(w.shape)}, "
                    f"got {tuple(g.shape)}")
        g, w = g.detach().double(), w.detach().double()
        if torch.isnan(g).any() and not torch.isnan(w).any():
            return f"nan|your output contains NaN{where}"
        if not torch.allclose(g, w, atol=atol, rtol=1e-5, equal_nan=True):
            diff = (g - w).abs().nan_to_num(nan=float("inf"))
            idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
            return (f"values|values differ{where}: max |difference| {diff.max().item():.3g} at "
                    f"index {idx} (got {g[idx].item():.4f}, expected {w[idx].item():.4f})")
    return None


def run_check(
    name: str,
    student: Callable,
    reference: Callable,
    cases: Sequence[Case],
    bugs: dict[str, tuple[Callable, str]] | None = None,
    atol: float = 1e-6,
    verbose: bool = True,
) -> CheckResult:
    """Compare ``student`` with ``reference`` on every case and diagnose a mismatch.

    Args:
        name: the exercise's name, used in the message.
        student, reference: the functions to compare.
        cases: the inputs (small, seeded).
        bugs: ``{diagnosis key: (buggy function, hint)}``, tried in order.
        atol: absolute tolerance.
        verbose: print the one-line message.
    """
    result = _run(name, student, reference, cases, bugs or {}, atol)
    if verbose:
        print(result.message)
    return result


@dataclass
class _Raised:
    """Stands for an exception a function raised on a case (so bugs that raise match too)."""

    error: Exception

    def same_as(self, other) -> bool:
        return isinstance(other, _Raised) and type(other.error) is type(self.error)


def _call(fn: Callable, case: Case):
    try:
        return case.call(fn)
    except NotImplementedError:
        raise
    except Exception as err:  # recorded, not raised: it is part of the behaviour
        return _Raised(err)


def _same(got, want, atol: float) -> bool:
    if isinstance(got, _Raised) or isinstance(want, _Raised):
        return isinstance(got, _Raised) and got.same_as(want)
    return _compare(got, want, atol) is None


def _reproduces(bug: Callable, cases: Sequence[Case], outputs: list, atol: float) -> bool:
    """Does ``bug`` behave like the student's function (same outputs, same errors) on every case?"""
    try:
        return all(_same(out, _call(bug, case), atol)
                   for case, out in zip(cases, outputs, strict=True))
    except NotImplementedError:
        return False


def _run(name, student, reference, cases, bugs, atol) -> CheckResult:
    try:
        outputs = [_call(student, case) for case in cases]
    except NotImplementedError:
        return CheckResult(name, NOT_ATTEMPTED,
                           f"⏳ {name}: not attempted yet — fill in the function above, "
                           "then rerun this cell.")
    problems = []
    for case, out in zip(cases, outputs, strict=True):
        if isinstance(out, _Raised):
            err = out.error
            problems.append(f"raised|your function raised {type(err).__name__}: {err}")
        else:
            problems.append(_compare(out, case.call(reference), atol))
    first = next((p for p in problems if p is not None), None)
    if first is None:
        return CheckResult(name, PASS, f"✅ {name}: correct on {len(cases)} test case(s).")
    key, reason = first.split("|", 1)
    failing = [i for i, p in enumerate(problems) if p is not None]
    # a bug that explains every case wins; else one that explains the failing cases
    for subset in (range(len(cases)), failing):
        sub_cases, sub_outputs = [cases[i] for i in subset], [outputs[i] for i in subset]
        for bug_key, (bug, hint) in bugs.items():
            if _reproduces(bug, sub_cases, sub_outputs, atol):
                extra = f" ({reason})" if key in ("wrong_shape", "raised") else ""
                return CheckResult(name, FAIL, f"❌ {name}: {hint}{extra}", bug_key)
    return CheckResult(name, FAIL, f"❌ {name}: {reason}.", key)
