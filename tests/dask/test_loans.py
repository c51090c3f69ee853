"""`LoopLoans`: which attempts of steps placed on a local cluster run on the run's loop
while that cluster starts."""

from __future__ import annotations

from dagloop.dagster.dask.loans import LoanPhase, LoopLoans


def test_lends_up_to_the_limit_at_once_and_takes_places_back() -> None:
    loans = LoopLoans(2)
    assert loans.lend("a") and loans.lend("b")
    assert not loans.lend("c")
    loans.ended("a")
    assert loans.lend("c")
    assert loans.lent == ["a", "b", "c"]


def test_an_attempt_that_was_not_lent_gives_back_nothing() -> None:
    loans = LoopLoans(1)
    assert loans.lend("a")
    loans.ended("placed_local")  # a step the loop runs anyway
    assert not loans.lend("b")


def test_a_retry_lent_before_its_first_attempt_let_go_counts_twice() -> None:
    loans = LoopLoans(2)
    assert loans.lend("a") and loans.lend("a")  # the retry starts as the first ends
    assert not loans.lend("b")
    loans.ended("a")
    assert loans.lend("b")


def test_nothing_is_lent_once_closed_or_with_a_limit_of_zero() -> None:
    loans = LoopLoans(3)
    assert loans.lend("a")
    loans.close()
    assert loans.phase is LoanPhase.CLOSED
    assert not loans.lend("b")
    assert LoopLoans(0).phase is LoanPhase.CLOSED
    assert not LoopLoans(0).lend("a")


def test_describe_names_the_first_lent_steps() -> None:
    loans = LoopLoans(10)
    assert loans.describe() == ""
    for key in "abcd":
        loans.lend(key)
    assert loans.describe() == "; 4 step attempt(s) ran on the run's loop meanwhile (a, b, c, ...)"


def test_closing_wakes_the_steps_put_off_once() -> None:
    loans = LoopLoans(1)
    woken: list[str] = []
    loans.on_close = lambda: woken.append("woken")
    assert loans.lending
    loans.close()
    loans.close()
    assert woken == ["woken"] and not loans.lending
