"""Leases, retries and timeouts sized together (shared/budgets.py): the inequalities that keep a
crashed attempt's work from waiting long, and a live attempt's work from being cut off."""

from __future__ import annotations

import threading
import time

from shared import budgets
from shared.config import Settings
from shared.leases import Heartbeat

#: The scheduler ticks the poller (and its reconciler) every minute.
TICK_INTERVAL_S = 60


def test_one_submission_with_every_retry_fits_in_the_tuner_and_poller_timeouts() -> None:
    worst = budgets.submission_worst_case_s()
    for function in ("tuner", "poller"):
        assert budgets.submission_time_left(budgets.FUNCTION_TIMEOUT_S[function], 0) >= worst, function


def test_a_crashed_attempts_claim_lapses_within_a_minute_and_its_work_resumes_within_two() -> None:
    assert budgets.CLAIM_LEASE_S <= 60
    assert budgets.CLAIM_LEASE_S + TICK_INTERVAL_S <= 120
    assert Settings().idempotency_lease_s == budgets.CLAIM_LEASE_S


def test_a_live_claim_survives_two_failed_renewals_in_a_row() -> None:
    assert budgets.CLAIM_LEASE_S >= 3 * budgets.HEARTBEAT_INTERVAL_S


def test_a_shorter_lease_beats_faster_so_a_live_claim_still_survives_two_failed_renewals() -> None:
    assert budgets.heartbeat_interval_s(budgets.CLAIM_LEASE_S) == budgets.HEARTBEAT_INTERVAL_S
    for lease_s in (1, 10, 15, 59, 60, 600):
        assert lease_s >= 3 * budgets.heartbeat_interval_s(lease_s), lease_s
        assert budgets.heartbeat_interval_s(lease_s) <= budgets.HEARTBEAT_INTERVAL_S


def test_a_claims_firestore_calls_end_before_its_lease_and_first_heartbeat() -> None:
    for lease_s in (1, 15, 60, 600):
        # Retries, then the attempt in flight: the claim written last still holds past a beat.
        worst = 2 * budgets.claim_call_timeout_s(lease_s)
        assert worst + budgets.heartbeat_interval_s(lease_s) < lease_s, lease_s


def test_a_submission_claim_outlives_a_create_that_reaches_vertex_late_whatever_the_lease() -> None:
    for lease_s in (1, 15, 60):
        assert budgets.submission_lease_s(lease_s) >= budgets.CREATE_SETTLE_S, lease_s
    assert budgets.submission_lease_s(600) == 600


def test_no_second_create_before_a_late_request_could_have_reached_vertex() -> None:
    assert budgets.CREATE_SETTLE_S >= 2 * budgets.CREATE_TIMEOUT_S
    assert budgets.CREATE_TIMEOUT_S > budgets.TUNING_CALL_TIMEOUT_S


def test_an_evaluation_call_that_starts_can_end_inside_the_invocation() -> None:
    settings = Settings()
    assert budgets.FUNCTION_TIMEOUT_S["completion"] == settings.function_timeout_s
    usable = settings.function_timeout_s - budgets.EVALUATION_RECORD_MARGIN_S
    assert settings.evaluation_request_timeout_s <= usable
    assert settings.evaluation_time_budget_s <= usable


def test_a_heartbeat_renews_until_its_work_ends() -> None:
    renewals: list[float] = []

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    with Heartbeat(renew, max_hold_s=60, interval_s=0.05) as heartbeat:
        time.sleep(0.4)
    count = len(renewals)
    time.sleep(0.2)

    assert count >= 4
    assert len(renewals) == count  # stopped with the work
    assert not heartbeat.lost


def test_a_heartbeat_stops_when_the_claim_is_taken_over_or_the_work_outlives_its_worst_case() -> None:
    taken_over = threading.Event()
    with Heartbeat(lambda: not taken_over.is_set(), max_hold_s=60, interval_s=0.05) as lost:
        taken_over.set()
        time.sleep(0.3)
    assert lost.lost

    calls: list[int] = []
    with Heartbeat(lambda: calls.append(1) or True, max_hold_s=0.12, interval_s=0.05) as hung:
        time.sleep(0.5)
    assert 1 <= len(calls) <= 3  # it gave up after max_hold_s, though the work went on
    assert not hung.lost


def test_a_failed_renewal_is_retried_at_the_next_beat() -> None:
    outcomes = iter([RuntimeError("Firestore unavailable"), True, True, True, True, True, True, True])

    def renew() -> bool:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with Heartbeat(renew, max_hold_s=60, interval_s=0.05) as heartbeat:
        time.sleep(0.3)
    assert heartbeat.renewals >= 2
    assert not heartbeat.lost
