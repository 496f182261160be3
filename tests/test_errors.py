"""The error-code table, walked code by code against spec section 8's classification summary."""

from __future__ import annotations

import pytest

from batchedit.im.errors import CODE_CLASSES, ErrorClass, classify, fatal_reason

# Spec section 8, "Classification summary for the bulk-edit tool", copied list by list.
SPEC_RATE_LIMITED = [60007, 60011, 60018, 60019]
SPEC_TRANSIENT = [
    20004, 20005, 20028, 60008, 60014, 70169, 70202, 70500, 90992, 90994, 90995, 91000, 80003,
]  # fmt: skip
SPEC_REGENERATE_SIG = [70001]
SPEC_AUTH_THEN_FAIL = [
    70002, 70003, 70005, 70009, 70013, 70014, 70016, 70020, 70052, 60004, 60005, 20002,
]  # fmt: skip
SPEC_PERMISSION = [60010, 70403, 90009]
SPEC_PERMANENT = [
    20001, 20003, 20022, 20023, 20026, 90001, 90002, 90003, 90005, 90006, 90007, 90008, 90010,
    90012, 90054, 93000, 80001, 80002, 80004,
]  # fmt: skip
SPEC_PER_APP = [60006, 60016, 60017, 60020, 60021]


@pytest.mark.parametrize("code", SPEC_RATE_LIMITED)
def test_rate_limit_codes_slow_down(code: int) -> None:
    """Rate-limit codes slow the run and retry."""
    assert classify(code) is ErrorClass.RATE_LIMITED


@pytest.mark.parametrize("code", SPEC_TRANSIENT)
def test_transient_codes_retry(code: int) -> None:
    """Transient, server-internal codes retry with backoff."""
    assert classify(code) is ErrorClass.TRANSIENT


@pytest.mark.parametrize("code", SPEC_REGENERATE_SIG)
def test_expired_sig_regenerates(code: int) -> None:
    """An expired UserSig is regenerated once, then retried."""
    assert classify(code) is ErrorClass.SIG_EXPIRED


@pytest.mark.parametrize("code", [c for c in SPEC_AUTH_THEN_FAIL if c != 70052])
def test_sig_errors_a_new_sig_cannot_fix_stop_the_run(code: int) -> None:
    """Wrong key, identifier or app: a sig regenerated from the same key fails the same way."""
    assert classify(code) is ErrorClass.FATAL


def test_invalidated_sig_is_regenerated() -> None:
    """70052 "UserSig invalidated, regenerate" (TIMCloudDef) asks for exactly a new sig."""
    assert classify(70052) is ErrorClass.SIG_EXPIRED


@pytest.mark.parametrize("code", SPEC_PERMISSION + SPEC_PER_APP)
def test_permission_and_app_codes_stop_the_run(code: int) -> None:
    """Admin rights missing or the app unusable: abort the run."""
    assert classify(code) is ErrorClass.FATAL


@pytest.mark.parametrize("code", SPEC_PERMANENT)
def test_record_errors_are_permanent(code: int) -> None:
    """Errors of one record are recorded and skipped."""
    assert classify(code) is ErrorClass.PERMANENT


def test_the_lockout_code_stops_the_run() -> None:
    """70050 (locked after failed sig checks) stops the run instead of renewing the lock."""
    assert classify(70050) is ErrorClass.FATAL


def test_callback_and_unknown_codes_are_permanent() -> None:
    """Custom callback codes (120001-130000) and codes the spec does not list never retry."""
    assert classify(120001) is ErrorClass.PERMANENT
    assert classify(123456789) is ErrorClass.PERMANENT


def test_answers_without_an_envelope() -> None:
    """No envelope: HTTP 429 is rate limiting, 5xx and no answer at all (timeout, reset) are
    transient."""
    assert classify(None, 429) is ErrorClass.RATE_LIMITED
    assert classify(None, 502) is ErrorClass.TRANSIENT
    assert classify(None, 500) is ErrorClass.TRANSIENT
    assert classify(None, None) is ErrorClass.TRANSIENT
    assert classify(0) is ErrorClass.OK


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 499])
def test_http_client_errors_other_than_429_stop_the_run(status: int) -> None:
    """A 4xx (but 429) means the request cannot succeed as sent, e.g. a wrong base URL: fatal."""
    assert classify(None, status) is ErrorClass.FATAL
    assert fatal_reason(None, f"HTTP {status}") == (
        f"HTTP {status} from the server: it is not the IM REST API; check the base URL or region"
    )


@pytest.mark.parametrize("code", [60002, 60009, 60012])
def test_url_level_codes_stop_the_run(code: int) -> None:
    """60002 (URL unparsable), 60009 (no such resource), 60012 (SDKAppID missing from the URL)
    fail every request of the run alike: fatal, with a hint about the base URL."""
    assert classify(code) is ErrorClass.FATAL
    assert "check the base URL" in fatal_reason(code, "x")


def test_table_covers_every_spec_list() -> None:
    """No code of the spec's summary is missing from the table."""
    listed = (
        SPEC_RATE_LIMITED + SPEC_TRANSIENT + SPEC_REGENERATE_SIG + SPEC_AUTH_THEN_FAIL
        + SPEC_PERMISSION + SPEC_PERMANENT + SPEC_PER_APP
    )  # fmt: skip
    assert set(listed) <= set(CODE_CLASSES)
