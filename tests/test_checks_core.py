"""The checks framework itself (``utils.checks._core``): copies, in-place changes, return values,
NaN, fingerprints, generators, forbidden calls, custom checks, and no side effects."""

from __future__ import annotations

import random
from collections import namedtuple

import numpy as np
import pytest
import torch

from utils.attention import softmax
from utils.checks import (
    Case,
    CheckFailed,
    call_student,
    compare,
    custom_check,
    expect_generator,
    expect_tensor,
    run_check,
)
from utils.checks._core import guarded


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def double(x):
    return 2 * x


def check_double(fn, bugs=None, cases=None, **kwargs):
    cases = cases or [Case((_x(3, 4),)), Case((_x(2, 5, seed=1),))]
    return run_check("double", fn, double, cases, bugs, verbose=False, **kwargs)


# ------------------------------------------------------------------------------ inputs


def test_the_reference_runs_on_pristine_inputs_and_the_change_is_named():
    def in_place(x):
        x *= 2  # the right values, but the input is changed
        return x

    result = check_double(in_place)
    assert result.diagnosis == "mutated_input"
    assert "changed its input `x` in place" in result.message


def test_a_change_to_one_of_two_aliased_inputs_and_to_a_list_is_noticed():
    x = _x(3)

    def pair(a, b, items):
        return a + b, len(items)

    def changes_list(a, b, items):
        items.sort()
        return a + b, len(items)

    cases = [Case((x, x, [3, 1, 2]))]
    assert run_check("pair", pair, pair, cases, verbose=False)
    result = run_check("pair", changes_list, pair, cases, verbose=False)
    assert result.diagnosis == "mutated_input" and "`items`" in result.message
    assert "work on a copy" in result.message
    assert cases[0].args[2] == [3, 1, 2]  # the case itself is untouched


def test_copies_keep_namedtuples_and_generators():
    Pair = namedtuple("Pair", "a b")
    seen = []

    def fn(p, generator):
        seen.append((type(p), torch.rand(1, generator=generator).item()))
        return p.a

    case = Case((Pair(_x(2), _x(2, seed=1)), torch.Generator().manual_seed(3)))
    assert run_check("copy", fn, fn, [case], verbose=False)
    assert seen[0][0] is Pair and seen[0][1] == seen[1][1]  # same generator state each call


# ------------------------------------------------------------------------------ return values


@pytest.mark.parametrize(("fn", "key", "text"), [
    (lambda x: None, "no_return", "did you forget `return`?"),
    (lambda x: (2 * x).tolist(), "wrong_type", "list"),
    (lambda x: (2 * x).numpy(), "wrong_type", "numpy.ndarray"),
    (lambda x: (2 * x).float(), "wrong_dtype", "torch.float32"),
    (lambda x: (2 * x).T, "wrong_shape", "wrong output shape"),
    (lambda x: (2 * x, x), "wrong_type", "tuple"),
    (lambda x: 2 * x + (x > 1) * 1e-3, "values", "first at index"),
    (lambda x: torch.where(x > 1, torch.nan, 2 * x), "nan", "NaN at index"),
    (lambda x: torch.where(x > 1, torch.inf, 2 * x), "nan", "inf at index"),
])
def test_return_values_are_named_plainly(fn, key, text):
    result = check_double(fn)
    assert result.status == "fail" and result.diagnosis == key, result.message
    assert text in result.message


def test_values_message_gives_the_first_wrong_entry_and_the_inputs():
    def wrong(x):
        y = 2 * x
        y[1, 2] += 1
        return y

    message = check_double(wrong).message
    want = 2 * _x(3, 4)[1, 2].item()
    assert f"first at index (1, 2): expected {want:#.4g}" in message
    assert "(1 of 12 entries differ)" in message and "inputs: x (3, 4) float64" in message


def test_tuples_bools_and_ints():
    def pair(x):
        return 2 * x, x.sum() > 0

    case = [Case((_x(3),))]
    ok = run_check("pair", lambda x: (2 * x, bool(x.sum() > 0)), lambda x: (2 * x, bool(x.sum() > 0)),
                   case, verbose=False, returns=("double", "flag"))
    assert ok
    result = run_check("pair", pair, lambda x: (2 * x, bool(x.sum() > 0)), case, verbose=False,
                       returns=("double", "flag"))
    assert result.diagnosis == "wrong_type" and "your flag (returned value 2)" in result.message
    count = run_check("count", lambda n: n * 2.0, lambda n: n * 2, [Case((3,))], verbose=False)
    assert count.diagnosis == "wrong_type" and "Python int" in count.message
    many = run_check("bool", lambda x: x > 0, lambda x: bool((x > 0).all()), case, verbose=False)
    assert many.diagnosis == "wrong_type" and "ambiguous" not in many.message
    one = run_check("pair", lambda x: 2 * x, lambda x: (2 * x, True), case, verbose=False,
                    returns=("double", "flag"))
    assert one.diagnosis == "wrong_output" and "`return double, flag`" in one.message


def test_an_inf_passes_only_where_the_reference_has_it():
    def additive(n):
        return torch.zeros(n, n, dtype=torch.float64).masked_fill(
            ~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))

    assert run_check("additive", additive, additive, [Case((4,))], verbose=False)
    wrong = run_check("additive", lambda n: additive(n).T, additive, [Case((4,))], verbose=False)
    assert wrong.diagnosis == "nan"


# ------------------------------------------------------------------------------ exceptions


def test_an_exception_is_reported_with_its_line_and_the_inputs():
    def broken(x):
        y = 2 * x
        return y @ torch.ones(7, dtype=x.dtype)  # wrong size

    result = check_double(broken)
    assert result.diagnosis == "raised"
    assert "RuntimeError" in result.message and "return y @ torch.ones(7" in result.message
    assert "inputs: x (3, 4) float64" in result.message and "Traceback" not in result.message


def test_only_a_bare_not_implemented_error_means_not_attempted():
    def stub(x):
        raise NotImplementedError

    def torch_like(x):
        raise NotImplementedError("Could not run 'aten::foo' with arguments from the 'X' backend")

    assert check_double(stub).status == "not attempted"
    assert check_double(torch_like).diagnosis == "raised"


def test_a_known_cause_of_an_exception_gets_its_hint():
    def view(x):
        return (2 * x).T.view(-1)

    result = run_check("view", view, lambda x: (2 * x).T.reshape(-1), [Case((_x(3, 4),))],
                       verbose=False, raised_hints={"view_bug": ("view size", "use reshape")})
    assert result.diagnosis == "view_bug" and "use reshape" in result.message


# ------------------------------------------------------------------------------ fingerprints


def test_a_bug_is_named_only_if_it_reproduces_every_case():
    bugs = {"triple": (lambda x: 3 * x, "you tripled")}
    assert check_double(lambda x: 3 * x, bugs).diagnosis == "triple"
    # triple on the first case only: a near miss, not the bug
    near = check_double(lambda x: 3 * x if x.shape == (3, 4) else 2 * x, bugs)
    assert near.diagnosis == "values"
    # one too many: not "triple" either
    assert check_double(lambda x: 4 * x, bugs).diagnosis == "values"


def test_alternatives_of_a_bug_and_dtype_free_fingerprints():
    bugs = {"off": ((lambda x: 3 * x, lambda x: 4 * x), "off")}
    assert check_double(lambda x: 4 * x, bugs).diagnosis == "off"
    assert check_double(lambda x: (3 * x).float(), bugs).diagnosis == "off"  # bug + dtype


def test_hints_extend_a_generic_diagnosis():
    result = check_double(lambda x: (2 * x).float(), hints={"wrong_dtype": "Keep float64."})
    assert result.message.endswith("Keep float64.")


# ------------------------------------------------------------------------------ randomness


def noise(x, generator=None):
    return x + torch.randn(x.shape, generator=generator, dtype=x.dtype)


def test_a_generator_in_a_case_must_be_used():
    cases = [Case((_x(3),), {"generator": torch.Generator().manual_seed(0)})]
    assert run_check("noise", noise, noise, cases, verbose=False)
    result = run_check("noise", lambda x, generator=None: noise(x), noise, cases, verbose=False)
    assert result.diagnosis in ("ignores_generator", "values")


def test_expect_generator():
    x = _x(3)

    def body(fn):
        def run():
            expect_generator(lambda g: call_student(fn, x, generator=g))
            return "fine"
        return run

    assert custom_check("noise", body(noise), verbose=False)
    ignores = custom_check("noise", body(lambda x, generator=None: noise(x)), verbose=False)
    assert ignores.diagnosis == "ignores_generator"
    fixed = custom_check("noise", body(lambda x, generator=None: x + 1), verbose=False)
    assert fixed.diagnosis == "not_random"


def test_checks_restore_the_global_random_state_and_silence_warnings(capfd):
    def noisy(x):
        import warnings
        warnings.warn("student warning", stacklevel=1)
        torch.manual_seed(123)
        np.random.seed(123)  # noqa: NPY002
        random.seed(123)
        torch.set_default_dtype(torch.float32)
        return 2 * x

    torch.manual_seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    assert check_double(noisy)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])  # noqa: NPY002
    assert before[2] == random.getstate()
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------ forbidden calls


def test_forbidden_functions_are_noticed_directly_and_indirectly():
    def direct(s, dim=-1):
        return softmax(s, dim=dim)

    def indirect(s, dim=-1):
        return direct(s, dim)

    def builtin(s, dim=-1):
        return torch.softmax(s, dim=dim)

    cases = [Case((_x(2, 3),))]
    for fn in (direct, indirect):
        result = run_check("softmax", fn, direct, cases, forbid=(softmax,), verbose=False)
        assert result.diagnosis == "used_library" and "utils.attention.softmax" in result.message
    assert run_check("softmax", builtin, direct, cases, forbid=(softmax,), verbose=False)
    result = run_check("softmax", builtin, direct, cases, forbid=(torch.softmax,), verbose=False)
    assert result.diagnosis == "used_library"


def test_forbidden_tensor_methods_are_noticed_when_called_on_a_tensor():
    def method(s, dim=-1):
        return s.softmax(dim)

    def unbound(s, dim=-1):
        return torch.Tensor.softmax(s, dim)

    def own(s, dim=-1):
        e = (s - s.amax(dim, keepdim=True)).exp()
        return e / e.sum(dim, keepdim=True)

    cases = [Case((_x(2, 3),))]
    for fn in (method, unbound):
        result = run_check("softmax", fn, own, cases, forbid=(torch.Tensor.softmax,), verbose=False)
        assert result.diagnosis == "used_library" and "Tensor.softmax" in result.message
    assert run_check("softmax", own, own, cases, forbid=(torch.Tensor.softmax,), verbose=False)


# ------------------------------------------------------------------------------ custom checks


def test_custom_check_helpers():
    def body_of(fn):
        def body():
            y = expect_tensor(call_student(fn, _x(3)), "y", shape=(3,), dtype=torch.float64)
            compare(y, 2 * _x(3), context="x (3,)")
            return "fine"
        return body

    assert custom_check("c", body_of(double), verbose=False).message == "✅ c: fine"
    assert custom_check("c", body_of(lambda x: None), verbose=False).diagnosis == "no_return"
    values = custom_check("c", body_of(lambda x: 3 * x), verbose=False)
    assert values.diagnosis == "values" and values.message.endswith("x (3,).")
    raised = custom_check("c", body_of(lambda x: x[5]), verbose=False)
    assert raised.diagnosis == "raised" and "IndexError" in raised.message

    def stub(x):
        raise NotImplementedError

    assert custom_check("c", body_of(stub), verbose=False).status == "not attempted"

    def failing():
        raise CheckFailed("mine", "my own diagnosis")

    assert custom_check("c", failing, verbose=False).diagnosis == "mine"


def test_a_bug_in_a_check_is_a_message(capsys):
    def broken():
        return 1 / 0

    result = custom_check("c", broken)
    assert result.diagnosis == "check_error" and "ZeroDivisionError" in result.message
    assert capsys.readouterr().out == result.message + "\n"


def test_guarded_restores_grad_mode_and_default_dtype():
    with guarded():
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32


def test_lists_and_dicts_are_compared_item_by_item():
    def stats(x):
        return {"mean": x.mean(), "parts": [x[:2], 2 * x]}

    case = [Case((_x(4),))]
    assert run_check("stats", stats, stats, case, verbose=False)
    wrong = run_check("stats", lambda x: {"mean": x.mean(), "parts": [x[:2], 3 * x]}, stats, case,
                      verbose=False)
    assert wrong.diagnosis == "values" and "your output['parts'][1]" in wrong.message
    keys = run_check("stats", lambda x: {"mean": x.mean()}, stats, case, verbose=False)
    assert keys.diagnosis == "wrong_type" and "keys" in keys.message
