"""The attempt state machine on its own: no event loop, no Dagster run.

Every transition of `AttemptTable`, and every one it refuses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from dagloop.dagster.attempts import (
    Attempt,
    AttemptState,
    AttemptStateError,
    AttemptTable,
    Settlement,
    Verdict,
)

S = AttemptState
START, RESTARTED = "STEP_START", "STEP_RESTARTED"
SUCCESS, FAILURE, RETRY = "STEP_SUCCESS", "STEP_FAILURE", "STEP_UP_FOR_RETRY"
OUTPUT = "STEP_OUTPUT"


@dataclass(frozen=True)
class Event:
    step_key: str | None
    event_type_value: str


def table_with(key: str = "step") -> tuple[AttemptTable[str], Attempt]:
    table: AttemptTable[str] = AttemptTable()
    return table, table.launch(key, f"payload of {key}")


def running(key: str = "step") -> tuple[AttemptTable[str], Attempt]:
    table, attempt = table_with(key)
    assert table.begin(attempt)
    return table, attempt


def ended(key: str = "step") -> tuple[AttemptTable[str], Attempt]:
    table, attempt = running(key)
    assert table.accept(attempt, SUCCESS) is Verdict.ENDS
    return table, attempt


# -- launching and beginning -----------------------------------------------------------


def test_a_launched_attempt_waits_and_is_open() -> None:
    table, attempt = table_with()
    assert attempt.state is S.WAITING and not attempt.begun
    assert list(table) == ["payload of step"] and len(table) == 1
    assert table.begun() == []


def test_each_attempt_gets_a_token_of_its_own_even_for_the_same_step() -> None:
    table: AttemptTable[None] = AttemptTable()
    first, second = table.launch("step", None), table.launch("step", None)
    assert first.token != second.token
    assert len(table) == 2


def test_begin_moves_a_waiting_attempt_to_running() -> None:
    table, attempt = table_with()
    assert table.begin(attempt)
    assert attempt.state is S.RUNNING and table.begun() == ["payload of step"]


@pytest.mark.parametrize("make", [running, ended])
def test_begin_twice_is_refused(make: object) -> None:
    table, attempt = make()  # type: ignore[operator]
    with pytest.raises(AttemptStateError, match="'step' cannot begin"):
        table.begin(attempt)


def test_a_withdrawn_attempt_does_not_begin() -> None:
    table, attempt = table_with()
    assert table.withdraw(attempt)
    assert attempt.state is S.WITHDRAWN
    assert not table.begin(attempt)
    assert attempt.state is S.WITHDRAWN


def _begin_in_a_thread_while_withdrawing(
    table: AttemptTable[str], attempt: Attempt
) -> tuple[bool, bool]:
    began: list[bool] = []
    barrier = threading.Barrier(2)

    def begin() -> None:
        barrier.wait()
        began.append(table.begin(attempt))

    thread = threading.Thread(target=begin)
    thread.start()
    barrier.wait()
    withdrawn = table.withdraw(attempt)
    thread.join()
    return began[0], withdrawn


def test_begin_and_withdraw_race_and_exactly_one_wins() -> None:
    for _ in range(200):
        table, attempt = table_with()
        began, withdrawn = _begin_in_a_thread_while_withdrawing(table, attempt)
        assert began != withdrawn
        assert attempt.state is (S.RUNNING if began else S.WITHDRAWN)


# -- withdrawing -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [running, ended])
def test_an_attempt_that_began_cannot_be_withdrawn(make: object) -> None:
    table, attempt = make()  # type: ignore[operator]
    state = attempt.state
    assert not table.withdraw(attempt)
    assert attempt.state is state


def test_a_withdrawn_attempt_reports_nothing_and_closes_without_a_verdict_owed() -> None:
    table, attempt = table_with()
    table.withdraw(attempt)
    with pytest.raises(AttemptStateError, match="before it began"):
        table.accept(attempt, START)
    assert table.settle(attempt) is Settlement.NOTHING
    assert table.abandon(attempt) is Settlement.NOTHING
    assert table.close(attempt)
    assert attempt.state is S.CLOSED and len(table) == 0


# -- events on their way to the caller -------------------------------------------------


def test_events_of_a_running_attempt_pass_and_its_opening_starts_the_budget() -> None:
    table, attempt = running()
    assert table.accept(attempt, START) is Verdict.OPENS
    assert table.accept(attempt, OUTPUT) is Verdict.PASS
    assert attempt.state is S.RUNNING


@pytest.mark.parametrize("terminal", [SUCCESS, FAILURE, RETRY])
def test_the_first_terminal_event_ends_the_attempt_and_a_second_is_dropped(
    terminal: str,
) -> None:
    table, attempt = running()
    assert table.accept(attempt, terminal) is Verdict.ENDS
    assert attempt.state is S.ENDED
    for second in (SUCCESS, FAILURE, RETRY):
        assert table.accept(attempt, second) is Verdict.DUPLICATE
    assert table.dropped_accepted == 3


def test_an_ended_attempt_still_passes_its_hook_events_but_opens_nothing() -> None:
    table, attempt = ended()
    assert table.accept(attempt, "HOOK_COMPLETED") is Verdict.PASS
    assert table.accept(attempt, START) is Verdict.PASS


def test_an_event_before_the_attempt_began_is_refused() -> None:
    table, attempt = table_with()
    with pytest.raises(AttemptStateError, match="reported STEP_START before it began"):
        table.accept(attempt, START)


def test_events_of_a_closed_or_abandoned_attempt_are_late() -> None:
    table, closed = ended("closed")
    table.close(closed)
    abandoned = table.launch("abandoned", "payload")
    table.begin(abandoned)
    table.abandon(abandoned)
    for attempt in (closed, abandoned):
        for kind in (START, OUTPUT, SUCCESS):
            assert table.accept(attempt, kind) is Verdict.LATE


# -- stopping --------------------------------------------------------------------------


def test_stop_records_the_reason_once() -> None:
    table, attempt = running()
    reason = KeyboardInterrupt()
    assert table.stop(attempt, reason)
    assert attempt.state is S.STOPPING and attempt.stop_reason is reason
    assert not table.stop(attempt, TimeoutError())
    assert attempt.stop_reason is reason


def test_a_stopping_attempt_still_reports_its_own_end() -> None:
    table, attempt = running()
    table.stop(attempt, KeyboardInterrupt())
    assert table.accept(attempt, FAILURE) is Verdict.ENDS
    assert attempt.state is S.ENDED


def test_an_ended_attempt_can_be_stopped_once_while_its_hooks_run() -> None:
    table, attempt = ended()
    assert table.stop(attempt, KeyboardInterrupt())
    assert attempt.state is S.ENDED
    assert not table.stop(attempt, KeyboardInterrupt())


def test_an_attempt_that_has_not_begun_cannot_be_stopped() -> None:
    table, attempt = table_with()
    with pytest.raises(AttemptStateError, match="withdraw it"):
        table.stop(attempt, KeyboardInterrupt())


def test_an_attempt_that_is_over_is_not_stopped() -> None:
    table, closed = ended()
    table.close(closed)
    withdrawn = table.launch("withdrawn", "payload")
    table.withdraw(withdrawn)
    for attempt in (closed, withdrawn):
        assert not table.stop(attempt, KeyboardInterrupt())
        assert attempt.stop_reason is None


# -- settling an attempt that stopped without its end ---------------------------------


@pytest.mark.parametrize("stop_first", [False, True])
def test_an_unsettled_attempt_is_owed_a_failure_once(stop_first: bool) -> None:
    table, attempt = running()
    if stop_first:
        table.stop(attempt, KeyboardInterrupt())
    assert table.settle(attempt) is Settlement.REPORT_FAILURE
    assert attempt.state is S.ENDED
    assert table.settle(attempt) is Settlement.NOTHING
    # Its own terminal event, arriving late, is dropped as a second one.
    assert table.accept(attempt, FAILURE) is Verdict.DUPLICATE


def test_an_attempt_whose_host_failed_before_it_began_is_owed_a_failure() -> None:
    table, attempt = table_with()
    assert table.settle(attempt) is Settlement.REPORT_FAILURE
    assert attempt.state is S.ENDED


def test_an_attempt_that_reported_its_end_is_owed_nothing() -> None:
    table, attempt = ended()
    assert table.settle(attempt) is Settlement.NOTHING


def test_an_attempt_whose_end_is_stored_but_not_yet_accepted_is_marked_unknown() -> None:
    table, attempt = running()
    assert table.admit(Event("step", START))
    assert table.admit(Event("step", SUCCESS))
    assert table.settle(attempt) is Settlement.MARK_UNKNOWN
    assert table.accept(attempt, SUCCESS) is Verdict.DUPLICATE


def test_a_disowned_attempt_stores_nothing_more_of_its_own() -> None:
    # Its end is reported by another process: what it stores here later is dropped.
    table, attempt = running()
    assert table.admit(Event("step", START))
    assert table.admit(Event("step", OUTPUT))
    assert table.disown(attempt)
    assert not table.admit(Event("step", OUTPUT))
    assert not table.admit(Event("step", FAILURE))
    assert table.admit(Event("other", OUTPUT))


def test_a_disowned_attempt_that_had_not_opened_never_does_in_storage() -> None:
    table, attempt = running()
    assert table.disown(attempt)
    assert not table.admit(Event("step", START))
    assert not table.admit(Event("step", SUCCESS))


def test_a_later_attempt_of_a_disowned_one_is_stored() -> None:
    table, first = running()
    assert table.admit(Event("step", START))
    assert table.disown(first)
    retry = table.launch("step", "retry")
    assert table.begin(retry)
    assert table.admit(Event("step", RESTARTED))
    assert table.admit(Event("step", OUTPUT))
    assert table.admit(Event("step", SUCCESS))


def test_storage_waits_at_the_fence_for_each_step_event_outside_the_lock() -> None:
    passed: list[str] = []
    table: AttemptTable[None] = AttemptTable(fence=lambda: passed.append("fence"))
    attempt = table.launch("step", None)
    table.begin(attempt)
    assert table.admit(None) and table.admit(Event(None, "RUN_START"))
    assert passed == []  # not a step's
    for event_type in (START, OUTPUT, SUCCESS):
        assert table.admit(Event("step", event_type))
    assert passed == ["fence"] * 3


def test_an_end_held_at_the_fence_while_its_attempt_is_disowned_is_dropped() -> None:
    # A worker's end waits for its lease; the worker learns it was lost meanwhile.
    at_fence, release = threading.Event(), threading.Event()

    def fence() -> None:
        at_fence.set()
        release.wait(10)

    table: AttemptTable[None] = AttemptTable(fence=fence)
    attempt = table.launch("step", None)
    table.begin(attempt)
    results: list[bool] = []
    storing = threading.Thread(target=lambda: results.append(table.admit(Event("step", SUCCESS))))
    storing.start()
    assert at_fence.wait(10)
    assert table.disown(attempt)  # the fence holds no lock of the table
    release.set()
    storing.join(10)
    assert results == [False]


def test_an_attempt_whose_end_is_stored_is_not_disowned() -> None:
    table, attempt = running()
    assert table.admit(Event("step", START))
    assert table.admit(Event("step", SUCCESS))
    assert not table.disown(attempt)


# -- the step's code returning ---------------------------------------------------------


def test_code_that_ended_without_a_terminal_event_is_reported_once() -> None:
    table, attempt = running()
    assert table.code_ended(attempt)
    assert attempt.state is S.ENDED
    assert not table.code_ended(attempt)


def test_code_that_reported_its_end_owes_nothing_when_it_returns() -> None:
    table, attempt = ended()
    assert not table.code_ended(attempt)


def test_code_cannot_end_before_it_began() -> None:
    table, attempt = table_with()
    with pytest.raises(AttemptStateError, match="ended before it began"):
        table.code_ended(attempt)


# -- closing ---------------------------------------------------------------------------


def test_close_releases_an_ended_attempt_once() -> None:
    table, attempt = ended()
    assert table.close(attempt)
    assert attempt.state is S.CLOSED and len(table) == 0
    assert not table.close(attempt)


@pytest.mark.parametrize("make", [table_with, running])
def test_an_unsettled_attempt_cannot_be_closed(make: object) -> None:
    table, attempt = make()  # type: ignore[operator]
    with pytest.raises(AttemptStateError, match="closed before its end was settled"):
        table.close(attempt)
    assert len(table) == 1


# -- abandoning ------------------------------------------------------------------------


@pytest.mark.parametrize("stop_first", [False, True])
def test_abandoning_an_unsettled_attempt_owes_its_failure_and_releases_it(
    stop_first: bool,
) -> None:
    table, attempt = running()
    if stop_first:
        table.stop(attempt, KeyboardInterrupt())
    assert table.abandon(attempt) is Settlement.REPORT_FAILURE
    assert attempt.state is S.ABANDONED and len(table) == 0
    assert table.abandon(attempt) is Settlement.NOTHING
    assert not table.close(attempt)
    assert table.settle(attempt) is Settlement.NOTHING


def test_abandoning_an_ended_attempt_owes_nothing() -> None:
    table, attempt = ended()
    assert table.abandon(attempt) is Settlement.NOTHING
    assert attempt.state is S.ABANDONED


def test_abandoning_an_attempt_whose_end_is_stored_marks_it_unknown() -> None:
    table, attempt = running()
    table.admit(Event("step", START))
    table.admit(Event("step", FAILURE))
    assert table.abandon(attempt) is Settlement.MARK_UNKNOWN


def test_an_attempt_that_has_not_begun_cannot_be_abandoned() -> None:
    table, attempt = table_with()
    with pytest.raises(AttemptStateError, match="cannot be abandoned"):
        table.abandon(attempt)


# -- the storage side ------------------------------------------------------------------


def test_storage_drops_a_second_terminal_event_and_reports_it() -> None:
    drops: list[tuple[str, str]] = []
    table, _ = running()
    table.set_drop_report(lambda key, kind: drops.append((key, kind)))
    assert table.admit(Event("step", START))
    assert table.admit(Event("step", SUCCESS))
    assert table.admit(Event("step", OUTPUT))
    assert not table.admit(Event("step", FAILURE))
    assert drops == [("step", FAILURE)] and table.dropped_stored == 1


def test_storage_tells_a_retry_from_the_attempt_before_it() -> None:
    table, _ = running()
    table.admit(Event("step", START))
    assert table.admit(Event("step", RETRY))
    retry = table.launch("step", "retry")
    # A late second terminal event of the first attempt, before the retry opened.
    assert not table.admit(Event("step", FAILURE))
    table.begin(retry)
    assert table.admit(Event("step", RESTARTED))
    assert table.admit(Event("step", SUCCESS))
    assert table.dropped_stored == 1


def test_storage_admits_a_failure_reported_for_a_retry_that_never_opened() -> None:
    table, first = running()
    table.admit(Event("step", START))
    table.admit(Event("step", RETRY))
    table.accept(first, RETRY)
    retry = table.launch("step", "retry")
    assert table.settle(retry) is Settlement.REPORT_FAILURE
    assert table.admit(Event("step", FAILURE))


def test_storage_passes_events_without_a_step_or_of_unknown_steps() -> None:
    table: AttemptTable[None] = AttemptTable()
    assert table.admit(None)
    assert table.admit(Event(None, "RUN_START"))
    assert table.admit(Event("elsewhere", SUCCESS))
    assert table.admit(Event("elsewhere", SUCCESS))
    assert table.dropped_stored == 0


def test_storage_still_checks_an_attempt_after_it_closed() -> None:
    table, attempt = ended()
    table.admit(Event("step", START))
    table.admit(Event("step", SUCCESS))
    table.close(attempt)
    assert not table.admit(Event("step", SUCCESS))
