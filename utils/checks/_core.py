"""Instant, specific feedback on exercises: the framework every ``check_*`` is built on.

A check runs the student's function on small seeded inputs and compares it with a reference.
When they differ it runs known buggy versions on the same inputs: a bug is named only when it
reproduces the student's output on *every* case. The check prints one line and returns a
:class:`CheckResult` (which displays nothing, so the line is not repeated).

What every check gets from this module, without writing it:

* **Copies.** The student's function, the reference and each bug get their own copies of the
  inputs (tensors, lists, dicts, generators with the same state), so the reference always runs on
  pristine inputs. An input the student's function changed is reported by its parameter name:
  "your function changed its input `scores` in place (e.g. `-=`)".
* **Errors, never tracebacks.** A stub raising ``NotImplementedError`` is "not attempted yet".
  Any other exception is reported with its type, text, the line of the student's code and the
  shapes of the case's inputs. An error inside a check itself becomes a message too
  (diagnosis ``"check_error"``; the tests make sure it never happens).
* **Return values named plainly.** ``None`` ("did you forget `return`?"), a list or a numpy array
  where a tensor is expected, a tensor where a bool or an int is expected, the wrong number of
  values, the wrong shape, the wrong dtype (float32 for float64 inputs fails), NaN or inf (never
  passes, unless the reference has the same inf there), then values: the first wrong entry.
* **Quiet and side-effect free.** Warnings are silenced while the student's code runs, and the
  global random state (torch, numpy, ``random``), the default dtype and grad mode are restored,
  so a check never changes the output of a later notebook cell.

Three ways to write a check (see CONTRIBUTING.md, "Checks"):

* :func:`run_check` — a reference on fixed cases, with a bug table (most exercises);
* :func:`custom_check` with :func:`call_student`, :func:`expect_tensor`, :func:`compare` and
  :func:`expect_generator` — random exercises checked by statistics, or rules rather than values;
* :func:`register` on every ``check_*`` with a correct answer, so the robustness test in
  ``tests/test_checks_robust.py`` feeds it every kind of wrong answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import math
import os
import random
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "REGISTRY",
    "Case",
    "CheckFailed",
    "CheckResult",
    "Exercise",
    "call_student",
    "compare",
    "custom_check",
    "expect_generator",
    "expect_tensor",
    "guarded",
    "randn",
    "register",
    "run_check",
]

PASS, NOT_ATTEMPTED, FAIL = "pass", "not attempted", "fail"

#: Diagnoses the framework gives by itself (a check's own bugs add theirs).
GENERIC_DIAGNOSES = {
    "raised": "the student's function raised an exception",
    "mutated_input": "it changed one of its inputs in place",
    "used_library": "it called a function the exercise asks the student to write",
    "no_return": "it returned None",
    "wrong_type": "it returned a list, a numpy array, a tensor for a bool, ...",
    "wrong_output": "it returned the wrong number of values",
    "wrong_shape": "an output has the wrong shape",
    "wrong_dtype": "an output has the wrong dtype",
    "nan": "an output holds NaN or inf",
    "values": "the values differ and no known bug explains them",
    "ignores_generator": "its random draws do not come from the generator passed",
    "not_random": "its result does not change with the generator's seed",
    "check_error": "the check itself failed (a bug in the check)",
}

#: Diagnoses for which the known bugs are tried (the others are reported as they are).
_MATCHABLE = {"raised", "wrong_shape", "wrong_dtype", "nan", "values"}

_NOT_ATTEMPTED_TEXT = "not attempted yet — fill in the function above, then rerun this cell."
_TORCH_DIR = os.path.dirname(torch.__file__)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    """A float64 standard-normal tensor from its own seeded generator (check inputs)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------ results, cases


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
    """One input to a check: positional and keyword arguments, and an optional ``label`` that
    messages show for this case (e.g. "a source of length 0")."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str | None = None

    def call(self, fn: Callable):
        """``fn`` on copies of the arguments (the case itself is never changed)."""
        args, kwargs = _copy((self.args, self.kwargs))
        return fn(*args, **kwargs)


class CheckFailed(Exception):
    """Raised inside a :func:`custom_check` body (or by the helpers) to end it with a failure."""

    def __init__(self, diagnosis: str, message: str):
        super().__init__(message)
        self.diagnosis, self.message = diagnosis, message


class _NotAttempted(Exception):
    """The student's function is still the stub."""


# ------------------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Exercise:
    """A registered check and a correct answer to it (in the student's signature)."""

    check: Callable[..., CheckResult]
    solution: Callable


#: Every check, by function name. ``tests/test_checks_robust.py`` feeds each one a wrong answer
#: of every kind, built from its ``solution``; a ``check_*`` missing here fails that test.
REGISTRY: dict[str, Exercise] = {}


def register(solution: Callable) -> Callable:
    """Decorator for a ``check_*`` function: record it with a correct answer ``solution``.

    ``solution`` must take the arguments the check passes to the student's function and pass the
    check; it must compute its result without changing its inputs.
    """

    def decorate(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        REGISTRY[check.__name__] = Exercise(check, solution)
        check.solution = solution  # type: ignore[attr-defined]
        return check

    return decorate


# ------------------------------------------------------------------------------ side effects


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Silence warnings and restore the global random state (torch, numpy, ``random``), the
    default dtype and grad mode afterwards: whatever runs inside leaves no trace."""
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (the global one)
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
            torch.set_default_dtype(dtype)
            torch.set_grad_enabled(grad)


# ------------------------------------------------------------------------------ copies


def _copy(obj, memo: dict | None = None, generators: bool = True):
    """A copy of the inputs: tensors cloned (aliases kept), generators with the same state
    (or the generators themselves if not ``generators``), containers copied, functions and
    numbers as they are."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Generator) and not generators:
        return obj
    if isinstance(obj, torch.Tensor):
        new = obj.detach().clone()
        if obj.requires_grad:
            new.requires_grad_(True)
    elif isinstance(obj, torch.Generator):
        new = torch.Generator(device=obj.device)
        new.set_state(obj.get_state())
    elif isinstance(obj, list):
        new = [_copy(x, memo, generators) for x in obj]
    elif isinstance(obj, tuple):
        items = [_copy(x, memo, generators) for x in obj]
        if type(obj) is tuple:
            new = tuple(items)
        elif hasattr(obj, "_fields"):  # a namedtuple
            new = type(obj)(*items)
        else:  # e.g. torch.Size
            new = type(obj)(items)
    elif isinstance(obj, dict):
        new = {k: _copy(v, memo, generators) for k, v in obj.items()}
    elif isinstance(obj, np.ndarray | set | bytearray | torch.nn.Module):
        new = copy.deepcopy(obj)
    else:  # numbers, strings, None, functions, classes: used as they are
        new = obj
    memo[id(obj)] = new
    return new


def _changed(original, now) -> bool:
    """Did an input change (in place) between ``original`` and the copy ``now``?"""
    if isinstance(original, torch.Tensor):
        if not isinstance(now, torch.Tensor) or now.shape != original.shape:
            return True
        if now.dtype != original.dtype:
            return True
        a, b = original.detach(), now.detach()
        if torch.equal(a, b):
            return False
        if a.is_floating_point() or a.is_complex():  # NaN == NaN here
            return not (torch.equal(a.isnan(), b.isnan())
                        and torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5)))
        return True
    if isinstance(original, list | tuple):
        return (not isinstance(now, type(original)) or len(now) != len(original)
                or any(_changed(a, b) for a, b in zip(original, now, strict=True)))
    if isinstance(original, dict):
        return (not isinstance(now, dict) or now.keys() != original.keys()
                or any(_changed(original[k], now[k]) for k in original))
    if isinstance(original, np.ndarray):
        return not (isinstance(now, np.ndarray) and original.shape == now.shape
                    and np.array_equal(original, now, equal_nan=original.dtype.kind in "fc"))
    if isinstance(original, set | bytearray):
        return original != now
    if isinstance(original, int | float | complex | str | bytes):  # inside a container
        return original is not now and original != now
    return False  # functions, generators (drawing from a generator is its use), other objects


@functools.lru_cache(maxsize=512)
def _signature(fn: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _bind(fn: Callable, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """``(parameter name, value)`` for each argument, named as in ``fn``'s signature."""
    try:
        signature = _signature(fn)
    except TypeError:  # an unhashable callable
        signature = None
    try:
        if signature is None:
            raise TypeError
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return [(f"argument {i + 1}", a) for i, a in enumerate(args)] + list(kwargs.items())
    named = []
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named += [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named += list(value.items())
        else:
            named.append((name, value))
    return named


def _describe_value(value) -> str:
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if not value.is_floating_point() and value.numel() <= 8:
            return f"= {value.tolist()}"
        return f"{tuple(value.shape)} {dtype}"
    if isinstance(value, torch.Generator):
        return "= a torch.Generator"
    if callable(value) and not isinstance(value, type):
        doc = (getattr(value, "__doc__", None) or "").strip().split("\n")[0].rstrip(".")
        return f"= {doc}" if doc else f"= {getattr(value, '__name__', 'a function')}"
    text = repr(value)
    return f"= {text}" if len(text) <= 40 else f"= a {type(value).__name__}"


def _describe(fn: Callable, case: Case) -> str:
    """The case's inputs as the student sees them: ``q (2, 3, 4) float64, lengths = [6, 0]``."""
    text = ", ".join(f"{name} {_describe_value(v)}" for name, v in _bind(fn, case.args, case.kwargs))
    if case.label:
        return f"{case.label}: {text}" if text else case.label
    return text


# ------------------------------------------------------------------------------ calling


_FORBID: contextvars.ContextVar[tuple] = contextvars.ContextVar("forbid", default=())


def _qualname(f) -> str:
    module = getattr(f, "__module__", None) or ""
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", repr(f))
    return f"{module}.{name}" if module and module != "builtins" else name


@contextlib.contextmanager
def _watching(forbid: Sequence) -> Iterator[list[str]]:
    """Record calls of the ``forbid`` functions (Python functions, classes: their methods;
    builtins such as ``torch.softmax``: by identity; methods of a builtin type such as
    ``torch.Tensor.softmax``: by name, when called on an instance, ``x.softmax(-1)``)
    while the block runs."""
    used: list[str] = []
    if not forbid:
        yield used
        return
    codes, builtins, methods = {}, {}, {}
    for f in forbid:
        if inspect.ismethoddescriptor(f) and isinstance(getattr(f, "__objclass__", None), type):
            name = f"Tensor.{f.__name__}" if issubclass(torch.Tensor, f.__objclass__) else _qualname(f)
            methods[f.__name__] = (f.__objclass__, name)
            builtins[id(f)] = name  # called as torch.Tensor.softmax(x)
        elif isinstance(f, type):
            for member in vars(f).values():
                member = inspect.unwrap(getattr(member, "__func__", member))
                if hasattr(member, "__code__"):
                    codes[member.__code__] = _qualname(f)
        elif hasattr(inspect.unwrap(f), "__code__"):
            codes[inspect.unwrap(f).__code__] = _qualname(f)
        else:
            builtins[id(f)] = _qualname(f)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            name = codes[frame.f_code]
        elif event == "c_call" and id(arg) in builtins:
            name = builtins[id(arg)]
        elif (event == "c_call" and getattr(arg, "__name__", None) in methods
              and isinstance(getattr(arg, "__self__", None), methods[arg.__name__][0])):
            name = methods[arg.__name__][1]
        else:
            return
        if name not in used:
            used.append(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield used
    finally:
        sys.setprofile(previous)


@dataclass
class _Call:
    """What one call of a function did."""

    output: Any = None
    error: BaseException | None = None
    line: str = ""
    mutated: list[tuple[str, bool]] = field(default_factory=list)  # (name, a tensor?)
    used: list[str] = field(default_factory=list)


def _is_stub(err: BaseException) -> bool:
    """The stub's bare ``raise NotImplementedError`` (torch raises it with a message, e.g. for
    an operation a dtype does not support: that is an error, not "not attempted")."""
    if str(err).strip():
        return False
    frames = traceback.extract_tb(err.__traceback__)
    return not frames or not os.path.abspath(frames[-1].filename).startswith(_TORCH_DIR)


def _student_line(fn: Callable, err: BaseException) -> str:
    """``line 3: `x = q @ k` `` for the deepest frame of the student's own code."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == code.co_filename]
    if not frames or frames[-1].lineno is None:
        return ""
    frame = frames[-1]
    source = (frame.line or "").strip()
    return f"line {frame.lineno}: `{source}`" if source else f"line {frame.lineno}"


def _invoke(fn: Callable, args: tuple, kwargs: dict, forbid: Sequence = (),
            generators: bool = True) -> _Call:
    """Call ``fn`` on copies of the arguments; record its output or error, the inputs it
    changed and the forbidden functions it called. Raises ``_NotAttempted`` for a stub.
    ``generators``: copy generators too (else the call draws from the ones passed)."""
    c_args, c_kwargs = _copy((args, kwargs), generators=generators)
    with _watching(forbid) as used:
        try:
            output = fn(*c_args, **c_kwargs)
        except NotImplementedError as err:
            if _is_stub(err):
                raise _NotAttempted from None
            return _Call(error=err, line=_student_line(fn, err), used=list(used))
        except Exception as err:  # recorded, not raised: it is part of the behaviour
            return _Call(error=err, line=_student_line(fn, err), used=list(used))
    mutated = []
    if any(_changed(a, b) for a, b in zip(args, c_args, strict=True)) or any(
            _changed(kwargs[k], c_kwargs[k]) for k in kwargs):  # then name them
        original, now = _bind(fn, args, kwargs), _bind(fn, c_args, c_kwargs)
        mutated = [(name, isinstance(a, torch.Tensor))
                   for (name, a), (_, b) in zip(original, now, strict=True) if _changed(a, b)]
    return _Call(output=output, mutated=mutated, used=list(used))


def _call_problem(call: _Call, inputs: str) -> tuple[str, str] | None:
    """The problem with a call itself (forbidden function, exception, changed input), if any."""
    if call.used:
        names = ", ".join(f"`{n}`" for n in call.used)
        return "used_library", (f"your function calls {names}: the exercise is to write this "
                                "yourself with torch operations.")
    if call.error is not None:
        err = call.error
        where = f" at {call.line}" if call.line else ""
        text = str(err).strip().split("\n")[0]
        text = f": {text}" if text else ""
        with_inputs = f" (inputs: {inputs})" if inputs else ""
        return "raised", f"your function raised {type(err).__name__}{text}{where}{with_inputs}"
    if call.mutated:
        name, tensor = call.mutated[0]
        if tensor:
            how = ("(e.g. `-=`, `/=`, `masked_fill_` or assigning into it); compute into a new "
                   f"tensor instead (e.g. `{name} = {name} - ...`)")
        else:
            how = ("(e.g. `.append`, `.sort()` or assigning into it); work on a copy instead "
                   f"(e.g. `{name} = list({name})`)")
        return "mutated_input", f"your function changed its input `{name}` in place {how}."
    return None


# ------------------------------------------------------------------------------ comparing outputs


def _type_name(x) -> str:
    t = type(x)
    if t.__module__ in ("builtins", None):
        return t.__name__
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def _format_pair(want, got) -> tuple[str, str]:
    """The two numbers with just enough digits to see that they differ."""
    integers = float(want).is_integer() and float(got).is_integer()
    if isinstance(want, bool) or isinstance(got, bool) or (
            integers and max(abs(want), abs(got)) < 1e15):
        return str(want), str(got)
    for digits in range(4, 17):
        a, b = f"{want:#.{digits}g}", f"{got:#.{digits}g}"
        if a != b:
            return a, b
    return repr(want), repr(got)


def _index(idx: tuple[int, ...]) -> str:
    return str(idx[0]) if len(idx) == 1 else str(idx)


def _subject(i: int | None, returns: Sequence[str] | None) -> str:
    """How messages name a returned value: "your output", or value ``i`` of a tuple."""
    if i is None:
        return "your output"
    if returns and i < len(returns):
        return f"your {returns[i]} (returned value {i + 1})"
    return f"returned value {i + 1}"


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


_TENSOR_TYPE_HINTS = {
    "list": "keep the result a tensor (no `.tolist()`; build it with torch operations, or "
            "`torch.stack` a list of tensors)",
    "numpy.ndarray": "stay in torch (no `.numpy()`, and torch functions rather than numpy ones)",
}


def _scalar_problem(got, want, subject: str, atol: float, rtol: float) -> tuple[str, str] | None:
    """A Python bool, int or float expected (``type(want)``)."""
    kind = type(want).__name__
    returned = "your function returned" if subject == "your output" else f"{subject} is"
    if isinstance(got, torch.Tensor):
        shape = f" of shape {tuple(got.shape)}" if got.dim() else ""
        how = ("reduce it to one answer, e.g. `torch.allclose(a, b)` or `bool(t.all())`"
               if kind == "bool" else f"convert one number with `{kind}(...)` or `.item()`")
        return "wrong_type", f"{returned} a tensor{shape}, expected a Python {kind}: {how}."
    ok = (type(got) is bool if kind == "bool"
          else isinstance(got, int) and not isinstance(got, bool) if kind == "int"
          else isinstance(got, int | float) and not isinstance(got, bool))
    if not ok:
        return "wrong_type", (f"{returned} {got!r} ({_article(_type_name(got))}), expected a "
                              f"Python {kind}.")
    if kind == "float" and not math.isfinite(got) and got != want:
        shown = "NaN" if math.isnan(got) else got
        return "nan", f"{returned} {shown}, not a finite number."
    equal = (got == want if kind != "float"
             else got == want or abs(got - want) <= atol + rtol * abs(want))
    if not equal:
        return "values", f"{returned} {got!r}, expected {want!r}"
    return None


def _tensor_problem(got, want: torch.Tensor, subject: str, atol: float, rtol: float,
                    ) -> tuple[str, str] | None:
    """Type, shape, dtype, NaN/inf and values of one returned tensor."""
    single = subject == "your output"
    if not isinstance(got, torch.Tensor):
        name = _type_name(got)
        hint = _TENSOR_TYPE_HINTS.get(name, "return a tensor")
        return "wrong_type", f"{subject} is {_article(name)}, expected a torch.Tensor: {hint}."
    if tuple(got.shape) != tuple(want.shape):
        what = "wrong output shape" if single else f"wrong shape of {subject}"
        return "wrong_shape", f"{what}: expected {tuple(want.shape)}, got {tuple(got.shape)}"
    if got.dtype != want.dtype:
        what = {torch.bool: " (a bool mask: True/False, e.g. from a comparison such as `j <= i`)",
                torch.int64: " (integer positions, e.g. from `argmax`)"}.get(want.dtype, "")
        if want.is_floating_point():
            what = (" (the inputs' dtype: create new tensors with `dtype=x.dtype`, and don't "
                    "convert with `.float()`)")
        return "wrong_dtype", f"{subject} has dtype {got.dtype}, expected {want.dtype}{what}."
    g, w = got.detach(), want.detach()
    if g.is_floating_point() or g.is_complex():
        bad = ~torch.isfinite(g) & ~(g == w)  # an inf passes only where the reference has it
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            kind = "NaN" if torch.isnan(g[idx]) else "inf"
            n = int(bad.sum())
            more = f" ({n} non-finite entries)" if n > 1 else ""
            return "nan", (f"{subject} contains {kind} at index {_index(idx)} (expected "
                           f"{w[idx].item():.4g}){more}")
        g64, w64 = g.to(torch.float64), w.to(torch.float64)
        wrong = ~torch.isclose(g64, w64, atol=atol, rtol=rtol) & ~(g64 == w64)
    else:
        wrong = g != w
    if wrong.any():
        idx = tuple(int(i) for i in wrong.nonzero()[0])
        want_s, got_s = _format_pair(w[idx].item(), g[idx].item())
        n = int(wrong.sum())
        at = f" at index {_index(idx)}" if idx else ""
        what = "values differ" if single else f"values of {subject} differ"
        return "values", (f"{what}: first{at}: expected {want_s}, got {got_s} "
                          f"({n} of {g.numel()} entries differ)")
    return None


def _output_problem(got, want, atol: float, rtol: float,
                    returns: Sequence[str] | None = None) -> tuple[str, str] | None:
    """``(diagnosis, message)`` for the first problem with ``got`` against ``want``, or None."""
    if got is None and want is not None:
        return "no_return", "your function returned None: did you forget `return`?"
    if isinstance(want, tuple):
        n = len(want)
        values = f" ({', '.join(returns)})" if returns else ""
        example = f"`return {', '.join(returns)}`" if returns else "return a tuple"
        if isinstance(got, torch.Tensor):
            return "wrong_output", (f"your function returned one tensor; expected {n} "
                                    f"values{values}: {example}.")
        if not isinstance(got, tuple | list):
            return "wrong_type", (f"your function returned {_article(_type_name(got))}; "
                                  f"expected a tuple of {n} values{values}: {example}.")
        if len(got) != n:
            return "wrong_output", (f"your function returned {len(got)} value(s), expected "
                                    f"{n}{values}")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            subject = _subject(i, returns)
            if g is None and w is not None:
                return "no_return", f"{subject} is None: did you forget to return it?"
            problem = _single_problem(g, w, subject, atol, rtol)
            if problem is not None:
                return problem
        return None
    return _single_problem(got, want, _subject(None, returns), atol, rtol)


def _single_problem(got, want, subject: str, atol: float, rtol: float) -> tuple[str, str] | None:
    if isinstance(want, torch.Tensor):
        return _tensor_problem(got, want, subject, atol, rtol)
    if isinstance(want, bool | int | float):
        return _scalar_problem(got, want, subject, atol, rtol)
    if isinstance(want, list | tuple | dict):  # nested: each item compared in turn
        if got is None:
            return "no_return", f"{subject} is None."
        if isinstance(want, dict):
            if not isinstance(got, dict) or set(got) != set(want):
                keys = sorted(map(str, want))
                return "wrong_type", f"{subject} must be a dict with the keys {keys}."
            items = [(f"{subject}[{k!r}]", got[k], w) for k, w in want.items()]
        else:
            if not isinstance(got, list | tuple) or len(got) != len(want):
                return "wrong_type", f"{subject} must be a list of {len(want)} values."
            items = [(f"{subject}[{i}]", g, w) for i, (g, w) in enumerate(zip(got, want,
                                                                                strict=True))]
        for where, g, w in items:
            problem = _single_problem(g, w, where, atol, rtol)
            if problem is not None:
                return problem
        return None
    try:
        equal = bool(got == want)
    except Exception:  # e.g. a tensor compared with a string
        equal = False
    returned = "your function returned" if subject == "your output" else f"{subject} is"
    return None if equal else ("values", f"{returned} {got!r}, expected {want!r}")


def _fingerprint(got, want, atol: float, rtol: float) -> bool:
    """Does ``got`` reproduce ``want`` (a bug's output)? Same structure, shapes and values, NaN
    and inf at the same places; dtypes may differ (a bug is a model of a mistake, not its dtype)."""
    if isinstance(want, tuple | list):
        return (isinstance(got, tuple | list) and len(got) == len(want)
                and all(_fingerprint(g, w, atol, rtol) for g, w in zip(got, want, strict=True)))
    if isinstance(want, dict):
        return (isinstance(got, dict) and set(got) == set(want)
                and all(_fingerprint(got[k], want[k], atol, rtol) for k in want))
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return False
        g, w = got.detach().to(torch.float64), want.detach().to(torch.float64)
        return bool(torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True))
    if isinstance(got, torch.Tensor):
        return False
    try:
        return bool(got == want)
    except Exception:
        return False


def _same(a: _Call, b: _Call, atol: float, rtol: float) -> bool:
    if a.error is not None or b.error is not None:
        return a.error is not None and b.error is not None and type(a.error) is type(b.error)
    return _fingerprint(a.output, b.output, atol, rtol)


def _identical(a, b) -> bool:
    """Exactly the same result (for reproducibility): tensors bit for bit, NaN equal to NaN."""
    if isinstance(a, tuple | list):
        return (isinstance(b, tuple | list) and len(a) == len(b)
                and all(_identical(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and not _changed(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _has_generator(obj) -> bool:
    if isinstance(obj, torch.Generator):
        return True
    if isinstance(obj, list | tuple):
        return any(_has_generator(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_generator(x) for x in obj.values())
    return False


# ------------------------------------------------------------------------------ run_check


def run_check(
    name: str,
    student: Callable,
    reference: Callable,
    cases: Sequence[Case],
    bugs: dict[str, tuple[Callable | Sequence[Callable], str]] | None = None,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    returns: Sequence[str] | None = None,
    hints: dict[str, str] | None = None,
    raised_hints: dict[str, tuple[str, str]] | None = None,
    forbid: Sequence = (),
    verbose: bool = True,
) -> CheckResult:
    """Compare ``student`` with ``reference`` on every case and diagnose a mismatch.

    Args:
        name: the exercise's name, used in the message.
        student, reference: the functions to compare; each call gets its own copies of the case.
        cases: the inputs (small, seeded). Put the case on which the bugs differ most first.
            A case holding a ``torch.Generator`` also checks that the draws come from it.
        bugs: ``{diagnosis: (buggy function, hint)}``, tried in order; the function may be a
            tuple of alternatives (the same bug written in ways that give different outputs,
            e.g. with NaN or zero rows). A bug is named only if it reproduces the student's
            output (values, NaN, shapes, the type of an exception) on every case.
        atol, rtol: tolerances of the comparison with the reference and the bugs.
        returns: names of the returned values, e.g. ``("output", "weights")``, for messages.
        hints: extra text for a generic diagnosis, e.g. ``{"wrong_dtype": "a mask is bool"}``.
        raised_hints: ``{diagnosis: (text in the exception's message, hint)}`` for exceptions
            with a known cause (e.g. ``.view`` of a non-contiguous tensor).
        forbid: functions the student must not call (``utils`` functions that answer the
            exercise, ``torch.softmax``...): calling one fails with "used_library".
        verbose: print the one-line message.
    """
    with guarded():
        try:
            result = _run(name, student, reference, cases, bugs or {}, atol, rtol, returns,
                          hints or {}, raised_hints or {}, forbid)
        except Exception as err:  # a bug in the check: a message, never a traceback
            result = _check_error(name, err)
    if verbose:
        print(result.message)
    return result


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def _check_error(name: str, err: Exception) -> CheckResult:
    return CheckResult(name, FAIL, f"❌ {name}: the check itself failed ({type(err).__name__}: "
                       f"{err}); please report this to the course's authors.", "check_error")


def _not_attempted(name: str) -> CheckResult:
    return CheckResult(name, NOT_ATTEMPTED, f"⏳ {name}: {_NOT_ATTEMPTED_TEXT}")


def _alternatives(bug) -> tuple[Callable, ...]:
    return tuple(bug) if isinstance(bug, tuple | list) else (bug,)


def _run(name, student, reference, cases, bugs, atol, rtol, returns, hints, raised_hints,
         forbid) -> CheckResult:
    try:
        calls = [_invoke(student, case.args, case.kwargs, forbid) for case in cases]
    except _NotAttempted:
        return _not_attempted(name)
    problem = None
    for case, call in zip(cases, calls, strict=True):
        inputs = _describe(student, case)
        problem = _call_problem(call, inputs)
        if problem is None:
            want = _invoke(reference, case.args, case.kwargs)
            if want.error is not None:
                raise RuntimeError(f"the reference raised {type(want.error).__name__}: "
                                   f"{want.error}") from want.error
            problem = _output_problem(call.output, want.output, atol, rtol, returns)
        if problem is None and _has_generator((case.args, case.kwargs)):
            torch.manual_seed(12345)  # another global random state: draws from it would differ
            again = _invoke(student, case.args, case.kwargs, forbid)
            if again.error is not None or not _identical(call.output, again.output):
                problem = ("ignores_generator", "two calls with identically seeded generators "
                           "gave different results: draw every random number from `generator` "
                           "(pass `generator=generator`).")
        if problem is not None:
            if problem[0] in ("values", "nan") and inputs:
                problem = (problem[0], f"{problem[1]}; inputs: {inputs}")
            break
    if problem is None:
        return CheckResult(name, PASS, f"✅ {name}: correct on {len(cases)} test case(s).")
    key, reason = problem
    if key in _MATCHABLE:
        for bug_key, (bug, hint) in bugs.items():
            for variant in _alternatives(bug):
                if all(_same(call, _invoke(variant, case.args, case.kwargs), atol, rtol)
                       for case, call in zip(cases, calls, strict=True)):
                    extra = f" ({reason})" if key in ("wrong_shape", "raised") else ""
                    return CheckResult(name, FAIL, f"❌ {name}: {hint}{extra}", bug_key)
    if key == "raised":
        text = str(next(c.error for c in calls if c.error is not None))
        for bug_key, (part, hint) in raised_hints.items():
            if part in text:
                return CheckResult(name, FAIL, f"❌ {name}: {hint} ({reason})", bug_key)
    extra = f" {hints[key]}" if key in hints else ""
    return CheckResult(name, FAIL, f"❌ {name}: {_sentence(reason)}{extra}", key)


# ------------------------------------------------------------------------------ custom checks


def custom_check(name: str, body: Callable[[], str], *, forbid: Sequence = (),
                 verbose: bool = True) -> CheckResult:
    """Run a check written as a function: ``body()`` returns the success text (printed after
    "✅ name: "), or raises :class:`CheckFailed`; the student's function is called inside it
    with :func:`call_student`. A stub gives "not attempted"; any other error in ``body`` is
    reported as a "check_error" message. ``forbid`` as in :func:`run_check`.
    """
    token = _FORBID.set(tuple(forbid))
    with guarded():
        try:
            result = CheckResult(name, PASS, f"✅ {name}: {body()}")
        except _NotAttempted:
            result = _not_attempted(name)
        except CheckFailed as failed:
            result = CheckResult(name, FAIL, f"❌ {name}: {_sentence(failed.message)}",
                                 failed.diagnosis)
        except Exception as err:  # a bug in the check: a message, never a traceback
            result = _check_error(name, err)
        finally:
            _FORBID.reset(token)
    if verbose:
        print(result.message)
    return result


def call_student(fn: Callable, *args, **kwargs):
    """Call the student's ``fn`` inside a :func:`custom_check` body, on copies of the arguments
    (except generators: it draws from the ones passed, so one generator can serve many calls).

    Returns its output. Raises :class:`CheckFailed` if it raised ("raised", with the exception,
    its line and the inputs), changed an input ("mutated_input") or called a forbidden function
    ("used_library"); a stub ends the check as "not attempted".
    """
    call = _invoke(fn, args, kwargs, _FORBID.get(), generators=False)
    if call.used or call.error is not None or call.mutated:
        raise CheckFailed(*_call_problem(call, _describe(fn, Case(args, kwargs))))
    return call.output


def compare(got, want, *, atol: float = 1e-6, rtol: float = 1e-5,
            returns: Sequence[str] | None = None, context: str = "") -> None:
    """Raise :class:`CheckFailed` unless ``got`` matches ``want`` exactly as :func:`run_check`
    compares (None, type, count, shape, dtype, NaN/inf, values); ``context`` (e.g. the inputs)
    is added to a values message."""
    problem = _output_problem(got, want, atol, rtol, returns)
    if problem is not None:
        key, message = problem
        if context and key in ("values", "nan"):
            message += f"; {context}"
        raise CheckFailed(key, message)


def expect_tensor(got, what: str = "your output", *, shape: tuple[int, ...] | None = None,
                  dtype: torch.dtype | None = None, finite: bool = True) -> torch.Tensor:
    """Return ``got`` if it is a tensor of this ``shape`` and ``dtype`` (None: any) with only
    finite values; else raise :class:`CheckFailed` naming the problem (for statistical checks,
    where there is no reference value to :func:`compare` with)."""
    if got is None:
        raise CheckFailed("no_return", f"{what} is None: did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        name = _type_name(got)
        hint = _TENSOR_TYPE_HINTS.get(name, "return a tensor")
        raise CheckFailed("wrong_type", f"{what} is {_article(name)}, expected a torch.Tensor: "
                          f"{hint}.")
    if shape is not None and tuple(got.shape) != tuple(shape):
        raise CheckFailed("wrong_shape", f"wrong shape for {what}: expected {tuple(shape)}, "
                          f"got {tuple(got.shape)}")
    if dtype is not None and got.dtype != dtype:
        raise CheckFailed("wrong_dtype", f"{what} has dtype {got.dtype}, expected {dtype}.")
    if finite and (got.is_floating_point() or got.is_complex()):
        bad = ~torch.isfinite(got.detach())
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            kind = "NaN" if torch.isnan(got[idx]) else "inf"
            raise CheckFailed("nan", f"{what} contains {kind} at index {_index(idx)}.")
    return got


def expect_generator(draw: Callable[[torch.Generator], Any], seed: int = 0, *,
                    distinct: bool = True, ignores: str | None = None,
                    not_random: str | None = None) -> Any:
    """Check that the student's random function draws from the generator passed to it.

    ``draw(generator)`` calls the student's function (with :func:`call_student`) and returns
    its result. The result must be the same for two generators seeded ``seed`` under different
    global random states ("ignores_generator" otherwise), and, if ``distinct``, differ for seed
    ``seed + 1`` ("not_random" otherwise; leave it off when two seeds can give the same result
    by chance, e.g. a few discrete draws). ``ignores``/``not_random``: hints replacing the
    default ones. Returns the first result. Use it inside a :func:`custom_check` body (which
    restores the global random state).
    """
    def run(global_seed: int, gen_seed: int):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)  # noqa: NPY002 (a student may draw from numpy's global RNG)
        random.seed(global_seed)
        return draw(torch.Generator().manual_seed(gen_seed))

    first = run(1, seed)
    if not _identical(first, run(2, seed)):
        raise CheckFailed("ignores_generator", ignores or (
            "two calls with identically seeded generators gave different results: draw every "
            "random number from `generator` (e.g. `torch.rand(..., generator=generator)`)."))
    if distinct and _identical(first, run(1, seed + 1)):
        raise CheckFailed("not_random", not_random or (
            "your result is the same for every generator seed: the random part must be drawn "
            "from `generator`."))
    return first
