"""Measuring the server's rate between two moments its bucket was seen empty.

`EmptySamples` is the bookkeeping of that measurement for `AdaptiveLimiter`
(``_ratelimit``): when the bucket was last seen empty, and how many requests
the server has accepted since. Apart from the limiter, which decides what a
sample means for its estimate and its rate.
"""

from __future__ import annotations


__all__ = ["EmptySamples"]


class EmptySamples:
    """The server's rate, sampled between two moments its bucket was empty.

    Every token made since the bucket was last empty went to an accepted
    request, unless the bucket overflowed meanwhile: a sample is a lower
    bound of the server's rate.

    Args:
        min_seconds: The shortest baseline a sample is taken over, between
            two 429s.
        min_header_seconds: The same when Remaining 0 said the bucket was
            empty.
    """

    __slots__ = ("_min_header_seconds", "_min_seconds", "accepted", "empty_at")

    def __init__(self, min_seconds: float, min_header_seconds: float) -> None:
        self._min_seconds = min_seconds
        self._min_header_seconds = min_header_seconds
        self.empty_at: float | None = None
        # Requests the server accepted since `empty_at` (each one a token).
        self.accepted = 0

    def empty(self, moment: float, *, refused: bool) -> float | None:
        """The bucket was empty at *moment*: the rate measured since, if any.

        None for the first moment, and for one too close to the last
        (*refused*: a 429 says it; otherwise Remaining 0 did).
        """
        if self.empty_at is None:
            self.empty_at = moment
            self.accepted = 0
            return None
        if moment - self.empty_at < (
            self._min_seconds if refused else self._min_header_seconds
        ):
            return None
        sample = self.accepted / (moment - self.empty_at)
        self.empty_at = moment
        self.accepted = 0
        return sample
