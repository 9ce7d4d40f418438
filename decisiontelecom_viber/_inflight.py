"""The requests a limiter has let go and not yet heard back about.

`InFlight` counts them two ways: all of them (every one may still take a
token the server reported), and the recent ones (the ones a stalled server
may be holding, to take all at once when it resumes). A request unanswered
for longer than the horizon is hung, not held up: it no longer counts as
recent, so a few requests that hang until their timeout never stop the
others.
"""

from __future__ import annotations

from collections import deque


__all__ = ["Flight", "InFlight"]


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

    def __len__(self) -> int:
        return self._count

    def start(self, now: float, *, on_credit: bool) -> Flight:
        """A request goes at *now*."""
        flight = Flight(now, on_credit)
        self._flights.append(flight)
        self._count += 1
        return flight

    def end(self, flight: Flight) -> None:
        """Its answer came (or it will never be sent); once per flight."""
        if flight.ended:
            return
        flight.ended = True
        self._count -= 1
        if flight.hung:
            self._hung -= 1

    def recent(self, now: float, horizon: float) -> int:
        """Requests in flight let go less than *horizon* seconds before *now*."""
        flights = self._flights
        while flights and (flights[0].ended or flights[0].granted_at < now - horizon):
            flight = flights.popleft()
            if not flight.ended:
                flight.hung = True
                self._hung += 1
        return self._count - self._hung
