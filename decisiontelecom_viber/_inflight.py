"""The requests a limiter has let go and not yet heard back about.

`InFlight` counts them two ways: all of them (every one may still take a
token the server reported), and the ones a stalled server may be holding,
to take all at once when it resumes. A request stops counting as held when
it is *overtaken* — a request let go well after it has been answered (a
stalled server answers nothing) — or once unanswered for longer than the
horizon: it hangs (or is merely slow), and a few such requests never stop
the others.
"""

from __future__ import annotations

import math
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
        # The latest grant time of a request that has been answered.
        self._answered_upto = -math.inf

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
            self._answered_upto = max(self._answered_upto, flight.granted_at)
        flight.ended = True
        self._count -= 1
        if flight.hung:
            self._hung -= 1

    def held(self, now: float, horizon: float, overtaken_after: float) -> int:
        """Requests in flight a stalled server may be holding.

        Args:
            now: The time.
            horizon: Unanswered this long, a request is hung.
            overtaken_after: A request let go this long after another, and
                answered, overtook it.
        """
        flights = self._flights
        cut = max(now - horizon, self._answered_upto - overtaken_after)
        while flights and (flights[0].ended or flights[0].granted_at < cut):
            flight = flights.popleft()
            if not flight.ended:
                flight.hung = True
                self._hung += 1
        return self._count - self._hung

    def oldest_held(self) -> float | None:
        """When the oldest request `held` counted was let go."""
        for flight in self._flights:
            if not flight.ended and not flight.hung:
                return flight.granted_at
        return None
