"""A worker's lease on its own: held, lapsed, renewed by PONGs, ended once it is lost."""

from __future__ import annotations

import threading
import time

from dagloop.dagster.dask.lease import SAFETY_SHARE, Lease


def test_a_lease_runs_out_a_safety_margin_before_the_run_may_take_the_worker_as_lost() -> None:
    start = time.monotonic()
    lease = Lease(3.0, start=start - 3.0 * (1 - SAFETY_SHARE) + 0.2)
    assert lease.held
    time.sleep(0.3)
    assert not lease.held and not lease.ended


def test_a_pong_renews_it_from_the_time_its_ping_was_sent() -> None:
    lease = Lease(3.0, start=time.monotonic() - 10)
    assert not lease.held
    lease.renew(time.monotonic() - 10)  # an old PING's answer does not help
    assert not lease.held
    lease.renew(time.monotonic())
    assert lease.held
    lease.renew(time.monotonic() - 10)  # nor does it shorten a later one
    assert lease.held


def test_waiting_returns_at_once_while_it_is_held() -> None:
    lease = Lease(60.0)
    began = time.monotonic()
    lease.wait()
    assert time.monotonic() - began < 1


def _waiter(lease: Lease) -> tuple[threading.Thread, threading.Event]:
    returned = threading.Event()

    def wait() -> None:
        lease.wait()
        returned.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, returned


def test_a_lapsed_lease_holds_its_waiters_until_a_pong_renews_it() -> None:
    lease = Lease(3.0, start=time.monotonic() - 10)
    thread, returned = _waiter(lease)
    assert not returned.wait(0.3)
    lease.renew(time.monotonic())
    assert returned.wait(5)
    thread.join(5)


def test_a_lapsed_lease_releases_its_waiters_when_it_ends() -> None:
    lease = Lease(3.0, start=time.monotonic() - 10)
    thread, returned = _waiter(lease)
    assert not returned.wait(0.3)
    lease.end()
    assert returned.wait(5) and lease.ended and not lease.held
    thread.join(5)
    lease.renew(time.monotonic())  # a PONG read after the end changes nothing
    assert not lease.held
