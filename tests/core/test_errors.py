"""The error hierarchy: exit codes by class, and the one line the CLI prints."""

from tokcomp_edge import errors as E


def test_exit_codes_by_class():
    assert E.InputError("x").exit_code == E.SpecError("x").exit_code == E.BundleError("x").exit_code == 2
    assert E.CheckFailed("x").exit_code == E.ParityError("x").exit_code == E.LintError("x").exit_code == 1
    assert E.RuntimeMissing("x").exit_code == 3


def test_one_line_joins_message_and_hint():
    err = E.InputError("pool size 15 is larger than the 14x14 patch grid.", "use S ≤ 14")
    assert err.one_line() == "pool size 15 is larger than the 14x14 patch grid. Use S ≤ 14"
    assert E.InputError("no hint here.").one_line() == "no hint here"
