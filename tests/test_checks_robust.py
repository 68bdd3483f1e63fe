"""Every check against every kind of wrong answer: it fails with the right message and never
raises, prints to stderr or changes the global random state.

The wrong answers are built from each check's registered solution (``utils.checks.REGISTRY``),
so a check added later is covered as soon as it is registered; a ``check_*`` that is not
registered fails ``test_every_check_is_registered``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import random
import warnings

import numpy as np
import pytest
import torch

import utils.checks
from utils.checks import REGISTRY, Case, run_check
from utils.checks._core import _copy

MODULES = [importlib.import_module(f"utils.checks.{m.name}")
           for m in pkgutil.iter_modules(utils.checks.__path__) if not m.name.startswith("_")]
CHECKS = sorted(REGISTRY)


def test_every_check_is_registered():
    found = {name: obj for module in MODULES for name, obj in vars(module).items()
             if name.startswith("check_") and inspect.isfunction(obj)
             and obj.__module__ == module.__name__}
    assert found, "no check found"
    missing = sorted(set(found) - set(REGISTRY))
    assert not missing, f"register these checks with @register(solution): {missing}"
    for name, check in found.items():
        assert REGISTRY[name].check is check
        assert getattr(utils.checks, name) is check, f"export {name} from utils.checks"


# ------------------------------------------------------------------------------ wrong answers


def _first(out, convert):
    """``out`` with ``convert`` applied to its first value that ``convert`` accepts (returns
    something else than None for); None if it accepts none."""
    if isinstance(out, tuple | list):
        for i, x in enumerate(out):
            new = _first(x, convert)
            if new is not None:
                return type(out)([*out[:i], new, *out[i + 1:]])
        return None
    return convert(out)


def _to_list(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return [x] if isinstance(x, bool | int | float) else None


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.array(x) if isinstance(x, bool | int | float) else None


def _to_tensor(x):  # a scalar answer given as a tensor (of two values: "ambiguous" if bool()ed)
    return torch.tensor([x, x]) if isinstance(x, bool | int | float) else None


def _wrong_dtype(x):
    if isinstance(x, torch.Tensor):
        new = {torch.float64: torch.float32, torch.float32: torch.float64, torch.bool: torch.float32,
               torch.int64: torch.int32}.get(x.dtype)
        return x.to(new) if new is not None else None
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return float(x)
    if isinstance(x, float):
        return round(x)
    return None


def _with(value):
    def convert(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
            x = x.clone()
            x[(0,) * x.dim()] = value
            return x
        return value if isinstance(x, float) else None

    return convert


CONVERSIONS = {  # variant: (convert, expected diagnoses, text the message must contain)
    "list": (_to_list, {"wrong_type"}, "list"),
    "numpy": (_to_numpy, {"wrong_type"}, "numpy"),
    "tensor_for_scalar": (_to_tensor, {"wrong_type"}, "tensor"),
    "wrong_dtype": (_wrong_dtype, {"wrong_dtype", "wrong_type"}, ""),
    "nan": (_with(float("nan")), {"nan"}, "NaN"),
    "inf": (_with(float("inf")), {"nan"}, "inf"),
}


def _mutate(value) -> bool:
    """Change ``value`` in place if it is a tensor or a list; did it?"""
    if isinstance(value, torch.Tensor) and value.numel():
        if value.dtype == torch.bool:
            value.logical_not_()
        else:
            value.add_(1)
        return True
    if isinstance(value, list):
        value.append(value[-1] if value else 0)
        return True
    return False


class Probe:
    """Wraps a solution: records its first call's arguments and output."""

    def __init__(self, solution):
        self.solution, self.calls = solution, []
        functools.update_wrapper(self, solution)

    def __call__(self, *args, **kwargs):
        out = self.solution(*args, **kwargs)
        if not self.calls:
            self.calls.append((args, kwargs, out))
        return out


@functools.cache
def _probe(name):
    probe = Probe(REGISTRY[name].solution)
    result = REGISTRY[name].check(probe)
    assert result.status == "pass", result.message
    return probe.calls[0]


def _mutated_name(solution, args, kwargs) -> str | None:
    bound = inspect.signature(solution).bind(*_copy(args), **_copy(kwargs))
    for name, value in bound.arguments.items():
        if (isinstance(value, torch.Tensor) and value.numel()) or isinstance(value, list):
            return name
    return None


def _variant(name: str, kind: str):
    """A wrong answer of this kind built from the check's solution, with the expected diagnoses
    and message text; None if the kind does not apply to this exercise."""
    solution = REGISTRY[name].solution
    args, kwargs, out = _probe(name)

    def wraps(fn):
        return functools.wraps(solution)(fn)

    if kind == "none":
        return wraps(lambda *a, **k: (solution(*a, **k), None)[1]), {"no_return"}, "`return`"
    if kind == "raises":
        def raises(*a, **k):
            raise ValueError("a wrong answer on purpose")
        return wraps(raises), {"raised"}, "ValueError: a wrong answer on purpose"
    if kind == "mutates":
        target = _mutated_name(solution, args, kwargs)
        if target is None:
            return None

        def mutates(*a, **k):
            out = solution(*_copy(a), **_copy(k))  # the right answer, from the originals
            bound = inspect.signature(solution).bind(*a, **k)
            assert _mutate(bound.arguments[target])
            return out
        return wraps(mutates), {"mutated_input"}, f"changed its input `{target}` in place"
    convert, diagnoses, text = CONVERSIONS[kind]
    if _first(out, convert) is None:
        return None
    return wraps(lambda *a, **k: _first(solution(*a, **k), convert)), diagnoses, text


KINDS = ["none", "raises", "mutates", *CONVERSIONS]


def _state():
    return (torch.get_rng_state(), np.random.get_state()[1].copy(),  # noqa: NPY002
            random.getstate(), torch.get_default_dtype(), torch.is_grad_enabled())


def _same_state(a, b) -> bool:
    return (torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
            and a[3:] == b[3:])


def _run(check, fn, capfd):
    before = _state()
    capfd.readouterr()
    result = check(fn)  # must not raise
    out, err = capfd.readouterr()
    assert err == "", f"the check wrote to stderr: {err}"
    assert out == result.message + "\n", "the check must print its message, once"
    assert _same_state(before, _state()), "the check changed the global random state"
    return result


@pytest.mark.parametrize("name", CHECKS)
def test_the_solution_passes_quietly(name, capfd):
    result = _run(REGISTRY[name].check, REGISTRY[name].solution, capfd)
    assert result.status == "pass" and result.diagnosis is None, result.message
    assert result.message.startswith("✅")


@pytest.mark.parametrize("name", CHECKS)
def test_a_stub_is_not_attempted(name, capfd):
    def stub(*args, **kwargs):
        raise NotImplementedError

    result = _run(REGISTRY[name].check, stub, capfd)
    assert result.status == "not attempted" and "not attempted yet" in result.message


@pytest.mark.parametrize("name", CHECKS)
def test_warnings_and_global_random_draws_of_a_solution_stay_inside(name, capfd):
    solution = REGISTRY[name].solution

    @functools.wraps(solution)
    def noisy(*args, **kwargs):
        warnings.warn("a warning from the student's code", UserWarning, stacklevel=1)
        torch.rand(3)
        np.random.rand(3)  # noqa: NPY002
        random.random()
        return solution(*args, **kwargs)

    result = _run(REGISTRY[name].check, noisy, capfd)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CHECKS)
def test_each_kind_of_wrong_answer_fails_plainly(name, kind, capfd):
    variant = _variant(name, kind)
    if variant is None:
        pytest.skip(f"{kind} does not apply to {name}")
    fn, diagnoses, text = variant
    result = _run(REGISTRY[name].check, fn, capfd)
    assert result.status == "fail", f"{kind} passed: {result.message}"
    assert result.diagnosis in diagnoses, result.message
    assert text in result.message, result.message
    assert "Traceback" not in result.message


def test_a_check_that_itself_fails_reports_it_without_raising(capsys):
    def broken_reference(x):
        raise RuntimeError("broken reference")

    result = run_check("demo", lambda x: x, broken_reference, [Case((torch.ones(2),))])
    assert result.diagnosis == "check_error" and "please report" in result.message
