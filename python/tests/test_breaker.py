"""The adapters' circuit breaker, on a manual clock."""

import pytest

import pagoda
from pagoda.integrations import Breaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def unavailable():
    raise pagoda.PagodaError(14, "UNAVAILABLE", "connection refused")


def test_opens_after_failures_in_a_row_then_probes():
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=5.0, clock=clock)
    calls = []

    def counted():
        calls.append(1)
        unavailable()

    for _ in range(3):
        assert breaker.call(counted, "fallback") == "fallback"
    assert breaker.open and breaker.trips == 1 and len(calls) == 3
    # Open: refused at once, the node is not called.
    assert breaker.call(counted, "fallback") == "fallback"
    assert len(calls) == 3
    # After the cooldown one call goes through; success closes it.
    clock.now = 5.0
    assert not breaker.open
    assert breaker.call(lambda: "ok", "fallback") == "ok"
    assert breaker.call(counted, "fallback") == "fallback"
    assert not breaker.open


def test_request_errors_fall_back_without_counting():
    breaker = Breaker(failures=1, clock=Clock())

    def invalid():
        raise pagoda.PagodaError(3, "INVALID_ARGUMENT", "bad")

    assert breaker.call(invalid, "fallback") == "fallback"
    assert not breaker.open


def test_other_exceptions_are_bugs_and_raise():
    breaker = Breaker(clock=Clock())
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0, None)
