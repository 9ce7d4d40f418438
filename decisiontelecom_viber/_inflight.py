"""The requests a limiter has let go and not yet heard back about.

`InFlight` counts them two ways: all of them (every one may still take a
token the server reported), and the ones a stalled server may be holding,
to take all at once when it resumes (`held`). A request stops counting as
held when it is *overtaken* — `_OVERTAKEN_BY` requests let go well after it
have been answered (a stalled server answers nothing; one that still
answers the odd request does not overtake many) — or once unanswered for
longer than the horizon: it hangs (or is merely slow), and a few such
requests never stop the others. Without any answer in between, each further
request that ages out waits twice as long as the one before (a stall that
lasts, a dead server: TCP's retransmission backoff); any answer resets that.
"""

from __future__ import annotations

import heapq
from collections import deque


__all__ = ["Flight", "InFlight"]

# A held request is overtaken once this many requests let go well after it
# have been answered.
_OVERTAKEN_BY = 8


class Flight:
    """One request let go: when, and whether on the server's ``Remaining``."""

    __slots__ = ("ended", "granted_at", "hung", "on_credit")

    def __init__(self, granted_at: float, on_credit: bool) -> None:
        self.granted_at = granted_at
        self.on_credit = on_credit
        self.ended = False
        self.hung = False


class InFlight:
    """Requests in flight, oldest first (see the module docstring)."""

    def __init__(self) -> None:
        self._flights: deque[Flight] = deque()
        self._count = 0
        self._hung = 0
        # The grant times of the latest answered requests (a min-heap).
        self._answered: list[float] = []
        # Requests aged out with no answer since: the horizon doubles each.
        self._backoff = 0
        self._answered_since_age_out = True

    def __len__(self) -> int:
        return self._count

    def start(self, now: float, *, on_credit: bool) -> Flight:
        """A request goes at *now*."""
        flight = Flight(now, on_credit)
        self._flights.append(flight)
        self._count += 1
        return flight

    def end(self, flight: Flight, *, answered: bool = False) -> None:
        """Its answer came (or it will never be sent); once per flight."""
        if flight.ended:
            return
        if answered:
            heapq.heappush(self._answered, flight.granted_at)
            if len(self._answered) > _OVERTAKEN_BY:
                heapq.heappop(self._answered)
            self._backoff = 0
            self._answered_since_age_out = True
        flight.ended = True
        self._count -= 1
        if flight.hung:
            self._hung -= 1
        flights = self._flights
        while flights and flights[0].ended:
            flights.popleft()  # (what held() has not pruned: memory stays flat)

    def held(self, now: float, horizon: float, overtaken_after: float) -> int:
        """Requests in flight a stalled server may be holding.

        Args:
            now: The time.
            horizon: Unanswered this long, a request is hung (doubled for
                each one aged out with no answer since).
            overtaken_after: A request let go this long after another, and
                answered, overtakes it.
        """
        flights = self._flights
        answered = self._answered
        overtaken = (
            answered[0] - overtaken_after
            if len(answered) >= _OVERTAKEN_BY
            else float("-inf")
        )
        while flights:
            flight = flights[0]
            if not flight.ended and flight.granted_at >= overtaken:
                if flight.granted_at >= now - horizon * float(2**self._backoff):
                    break
                # Aged out: the next one waits twice as long, unless an
                # answer comes first.
                if not self._answered_since_age_out:
                    self._backoff += 1
                self._answered_since_age_out = False
            flights.popleft()
            if not flight.ended:
                flight.hung = True
                self._hung += 1
        return self._count - self._hung

    def hung_at(self, horizon: float) -> float | None:
        """When the oldest request `held` counted will count as hung, if any."""
        for flight in self._flights:
            if not flight.ended and not flight.hung:
                return flight.granted_at + horizon * float(2**self._backoff)
        return None
