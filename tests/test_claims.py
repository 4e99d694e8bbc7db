"""prunekit.claims: a claim prints one line in a student's run, raises in the test suite."""

import json

import pytest

from prunekit.claims import ClaimError, Claims


def test_a_claim_inside_its_band_prints_one_readable_line(capsys):
    verdict = Claims(mode="report").near("after one epoch", 0.967, 0.966, tol=0.015, fmt=".1%")
    assert verdict.holds
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "96.7% on this machine" in out and "96.6% ± 1.5 points" in out


def test_outside_the_band_a_student_gets_a_warning_not_a_traceback(capsys):
    verdict = Claims(mode="report").near("after one epoch", 0.931, 0.966, tol=0.015, fmt=".1%")
    assert not verdict.holds
    out = capsys.readouterr().out
    assert "WARNING" in out and "after one epoch" in out and "93.1%" in out and "96.6%" in out
    assert "CPU" in out   # says why machines differ


def test_the_test_suite_fails_on_a_broken_claim():
    check = Claims(mode="strict")
    check.near("inside", 0.96, 0.966, tol=0.015)
    with pytest.raises(ClaimError, match="outside"):
        check.near("outside", 0.90, 0.966, tol=0.015)
    with pytest.raises(AssertionError):          # a ClaimError is an AssertionError: nbval shows it
        check.above("rho", 0.59, 0.60)


@pytest.mark.parametrize("call, holds", [
    (lambda c: c.near("n", 10.4, 10.0, rel=0.05), True),
    (lambda c: c.near("n", 10.6, 10.0, rel=0.05), False),
    (lambda c: c.near("n", float("nan"), 10.0, tol=1.0), False),
    (lambda c: c.above("a", 0.61, 0.6), True),
    (lambda c: c.above("a", 0.6, 0.6), False),
    (lambda c: c.below("b", 0.59, 0.6), True),
    (lambda c: c.between("w", 0.5, 0.4, 0.6), True),
    (lambda c: c.between("w", 0.7, 0.4, 0.6), False),
    (lambda c: c.beats("m", 0.9, 0.5, margin=0.3), True),
    (lambda c: c.beats("m", 0.9, 0.7, margin=0.3), False),
    (lambda c: c.exact("macs", 9_145_216, 9_145_216), True),
    (lambda c: c.exact("widths", [16, 32], [16, 31]), False),
])
def test_each_kind_of_claim(call, holds):
    assert call(Claims(mode="report")).holds is holds


def test_claims_about_the_default_run_are_shown_not_checked_elsewhere(capsys):
    check = Claims(default_run=False, mode="strict")
    verdict = check.near("the text's number", 0.5, 0.966, tol=0.01)   # no raise: another config
    assert not verdict.applies and "not checked" in capsys.readouterr().out
    with pytest.raises(ClaimError):
        check.exact("a structural fact holds in every configuration", 3, 4)


def test_every_claim_is_logged_for_measuring_bands(tmp_path):
    log = tmp_path / "claims.jsonl"
    check = Claims(mode="report", log=str(log))
    check.near("a", 0.5, 0.5, tol=0.1)
    check.beats("b", 0.9, 0.1, margin=0.5)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[1]["value"] == pytest.approx(0.8) and rows[1]["holds"] is True


def test_a_band_must_be_given_once():
    with pytest.raises(ValueError, match="exactly one"):
        Claims(mode="report").near("x", 1.0, 1.0)
    with pytest.raises(ValueError, match="PRUNEKIT_CLAIMS"):
        Claims(mode="loud")


def test_a_verdict_left_as_a_cells_last_value_displays_nothing_more():
    verdict = Claims(mode="report").above("x", 1.0, 0.0)
    assert verdict._ipython_display_() is None and "x" in verdict.line()
