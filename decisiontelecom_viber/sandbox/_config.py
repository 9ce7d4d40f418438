"""`SandboxConfig`: every knob of the fake API, with safe defaults."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._buckets import DIALECTS, Dialect


__all__ = [
    "HeaderDialect",
    "LatencyDistribution",
    "Profile",
    "RateLimitAlgorithm",
    "SandboxConfig",
]

LatencyDistribution = Literal["fixed", "uniform", "exponential", "lognormal"]
# False (no headers) or the dialect the X-Rate-Limit-* headers speak.
HeaderDialect = Literal[False, "yii2", "full-reset", "next-token"]
RateLimitAlgorithm = Literal["token-bucket", "yii2"]
# Which HTTP statuses carry the API's errors (SandboxConfig.profile).
Profile = Literal["default", "vendor"]
_ALGORITHMS: tuple[RateLimitAlgorithm, ...] = ("token-bucket", "yii2")

_PROBABILITIES = (
    "fault_500",
    "fault_502_html",
    "fault_disconnect_before",
    "fault_disconnect_after",
    "fault_truncated_body",
    "latency_spike_probability",
    "undelivered_fraction",
    "rejected_fraction",
    "error_fraction",
    "seen_fraction",
    "sms_undeliverable_fraction",
    "reply_fraction",
)


def _check(
    instance: SandboxConfig, attribute: attrs.Attribute[Any], value: Any
) -> None:
    name = attribute.name
    if name in _PROBABILITIES and not 0.0 <= value <= 1.0:
        raise ValueError(f"SandboxConfig.{name} must be in [0, 1]")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"SandboxConfig.{name} must not be negative")


def _headers(value: bool | str) -> HeaderDialect:
    """``rate_limit_headers``: True is Yii2's dialect (the API's own)."""
    if value is True:
        return "yii2"
    if value is False:
        return False
    for dialect in DIALECTS:
        if value == dialect:
            return dialect
    choices = ", ".join(repr(d) for d in DIALECTS)
    raise ValueError(
        f"SandboxConfig.rate_limit_headers must be False, True (= 'yii2') or one"
        f" of {choices}; got {value!r}"
    )


def _algorithm(
    instance: SandboxConfig, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None and value not in _ALGORITHMS:
        choices = ", ".join(repr(a) for a in _ALGORITHMS)
        raise ValueError(
            f"SandboxConfig.rate_limit_algorithm must be None or one of {choices};"
            f" got {value!r}"
        )


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """Every knob of the sandbox. The defaults make a polite, fault-free API.

    Times are in seconds. Lifecycle times are in *API time*, which runs
    ``time_scale`` times faster than real time; rate limits and latencies are
    real time.

    Attributes:
        access_key: The key clients must send (``Authorization: Basic
            base64(key)``; the curl form ``base64(key:)`` works too).
        extra_access_keys: More accepted keys; each has its own rate limit.
        rate_limit: Requests per second allowed per key, or None for no limit.
        burst: Size of the token bucket: requests allowed at once (the token
            bucket only; Yii2's algorithm allows its whole limit at once).
        retry_after_header: Send ``Retry-After`` (whole seconds until a request
            would be allowed) with 429s.
        rate_limit_headers: Send ``X-Rate-Limit-Limit``, ``-Remaining`` and
            ``-Reset`` with every answer, in a dialect: ``yii2`` (the API's
            own, and what True means: Yii2's algorithm exactly, Limit = the
            limit per window, Remaining = allowance - 1, Reset = whole seconds
            until full, the window on a 429), ``full-reset`` (a token bucket;
            Limit = burst, Remaining = whole tokens left, Reset = whole seconds
            until full) or ``next-token`` (the same, but Reset = whole seconds
            until the next token, at least 1); False sends none.
        rate_limit_window: Yii2's window in seconds: it allows
            round(rate_limit x window) requests per window, refilled in whole
            seconds (fractions of a token are lost on every request).
        rate_limit_algorithm: ``token-bucket`` or ``yii2``; None (the default)
            lets the header dialect decide (yii2 for ``yii2``, the token bucket
            otherwise and when headers are off). Set it to run Yii2's algorithm
            without headers.
        profile: Which HTTP statuses carry the API's errors (an assumption
            either way; docs/testing.md has the sources). ``default``: each
            on its own (400/401/402/429/500). ``vendor``: what the vendor's
            own SDK tests assume: business errors (invalid parameter, empty
            balance, rate limit) as HTTP 200 with the error body, a bad key
            as a real 401, server faults as real 5xx.
        errors_with_http_200: Answer every error body with HTTP 200 (401,
            404, bad JSON and 500 included).
        fault_500: Probability of a 500 with the documented body (not accepted).
        fault_502_html: Probability of a proxy-style HTML 502 page (not accepted).
        fault_disconnect_before: Probability of dropping the connection before
            the message is accepted.
        fault_disconnect_after: Probability of dropping the connection after the
            message was accepted (the ambiguous case).
        fault_truncated_body: Probability of accepting the message, then cutting
            the answer mid-body.
        latency: Typical answer latency (the median; 0 for none).
        latency_distribution: ``fixed``, ``uniform`` (0 to 2x), ``exponential``
            or ``lognormal`` (sigma 0.5) around *latency*.
        latency_spike_probability: Probability of a spike of *latency_spike*
            seconds instead (to provoke read timeouts).
        latency_spike: Length of a latency spike.
        balance: Messages the account can still pay for (None: unlimited);
            past it, sends get 402 (code 3).
        time_scale: How much faster API time runs than real time.
        sent_after: API seconds from acceptance (pending) to sent.
        delivered_after: Typical API seconds from sent to delivered (0.5x to
            1.5x at random).
        seen_after: API seconds from delivered to seen.
        seen_fraction: Fraction of delivered messages that get seen.
        undelivered_fraction: Fraction that end undelivered.
        rejected_fraction: Fraction that end rejected.
        error_fraction: Fraction that end in error.
        undelivered_after: API seconds until an undeliverable message without
            ``validity_period`` is reported undelivered.
        sms_delivered_after: API seconds from the SMS fallback to its outcome.
        sms_undeliverable_fraction: Fraction of SMS fallbacks that fail.
        sms_enroute_status: While the SMS fallback is under way, answer
            ``sms_message_status`` 1 (SMPP's ENROUTE). No vendor source or
            readable document has that code (an inference from the SMPP
            numbering the known codes match); by default the SMS fields
            appear only with the SMS's outcome.
        reply_fraction: Fraction of delivered 2Way messages (206/208) that get
            a simulated user reply.
        reply_after: API seconds from delivered to the reply.
        reply_text: Text of simulated replies.
        status_retention: API seconds a message can be looked up (5 days).
        callback_timeout: Real seconds to wait for a callback receiver.
        callback_attempts: Delivery attempts per callback (1 = no redelivery).
        first_message_id: ID of the first accepted message.
        seed: Seed of the random choices (faults, fates), for reproducible runs.
        record_requests: Keep a record of every request (turn off for long
            benchmarks).
    """

    access_key: str = "sandbox-access-key"
    extra_access_keys: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    rate_limit: float | None = attrs.field(default=None, validator=_check)
    burst: int = attrs.field(default=10, validator=_check)
    retry_after_header: bool = False
    rate_limit_headers: HeaderDialect = attrs.field(default=False, converter=_headers)
    rate_limit_window: int = attrs.field(default=1, validator=_check)
    rate_limit_algorithm: RateLimitAlgorithm | None = attrs.field(
        default=None, validator=_algorithm
    )
    profile: Profile = attrs.field(
        default="default", validator=attrs.validators.in_(("default", "vendor"))
    )
    errors_with_http_200: bool = False
    fault_500: float = attrs.field(default=0.0, validator=_check)
    fault_502_html: float = attrs.field(default=0.0, validator=_check)
    fault_disconnect_before: float = attrs.field(default=0.0, validator=_check)
    fault_disconnect_after: float = attrs.field(default=0.0, validator=_check)
    fault_truncated_body: float = attrs.field(default=0.0, validator=_check)
    latency: float = attrs.field(default=0.0, validator=_check)
    latency_distribution: LatencyDistribution = attrs.field(
        default="fixed",
        validator=attrs.validators.in_(
            ("fixed", "uniform", "exponential", "lognormal")
        ),
    )
    latency_spike_probability: float = attrs.field(default=0.0, validator=_check)
    latency_spike: float = attrs.field(default=5.0, validator=_check)
    balance: int | None = attrs.field(default=None, validator=_check)
    time_scale: float = attrs.field(default=1.0, validator=_check)
    sent_after: float = attrs.field(default=1.0, validator=_check)
    delivered_after: float = attrs.field(default=2.0, validator=_check)
    seen_after: float = attrs.field(default=5.0, validator=_check)
    seen_fraction: float = attrs.field(default=0.7, validator=_check)
    undelivered_fraction: float = attrs.field(default=0.0, validator=_check)
    rejected_fraction: float = attrs.field(default=0.0, validator=_check)
    error_fraction: float = attrs.field(default=0.0, validator=_check)
    undelivered_after: float = attrs.field(default=30.0, validator=_check)
    sms_delivered_after: float = attrs.field(default=3.0, validator=_check)
    sms_undeliverable_fraction: float = attrs.field(default=0.0, validator=_check)
    sms_enroute_status: bool = False
    reply_fraction: float = attrs.field(default=0.0, validator=_check)
    reply_after: float = attrs.field(default=3.0, validator=_check)
    reply_text: str = "Yes, please"
    status_retention: float = attrs.field(default=5 * 86400.0, validator=_check)
    callback_timeout: float = attrs.field(default=5.0, validator=_check)
    callback_attempts: int = attrs.field(default=1, validator=_check)
    first_message_id: int = attrs.field(default=1000, validator=_check)
    seed: int | None = None
    record_requests: bool = True

    def __attrs_post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("SandboxConfig.time_scale must be > 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("SandboxConfig.rate_limit must be > 0 or None")
        if self.burst < 1:
            raise ValueError("SandboxConfig.burst must be >= 1")
        window: object = self.rate_limit_window  # JSON may bring anything
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(
                "SandboxConfig.rate_limit_window must be a whole number of"
                f" seconds >= 1; got {window!r}"
            )
        headers, algorithm = self.rate_limit_headers, self.rate_limit_algorithm
        if headers and algorithm and (algorithm == "yii2") != (headers == "yii2"):
            raise ValueError(
                f"SandboxConfig.rate_limit_algorithm {algorithm!r} contradicts"
                f" rate_limit_headers {headers!r}: the dialect decides the"
                " algorithm (leave rate_limit_algorithm None)"
            )
        if self.callback_attempts < 1:
            raise ValueError("SandboxConfig.callback_attempts must be >= 1")
        fates = self.undelivered_fraction + self.rejected_fraction + self.error_fraction
        if fates > 1.0:
            raise ValueError(
                "the undelivered, rejected and error fractions add up to > 1"
            )
        faults = (
            self.fault_500
            + self.fault_502_html
            + self.fault_disconnect_before
            + self.fault_disconnect_after
            + self.fault_truncated_body
        )
        if faults > 1.0:
            raise ValueError("the fault probabilities add up to > 1")

    @property
    def rate_limit_dialect(self) -> Dialect | None:
        """The algorithm and dialect of the per-key buckets.

        The headers' dialect when they are on; otherwise ``"yii2"`` for Yii2's
        algorithm and None for the token bucket (whose headers are not sent).
        """
        if self.rate_limit_headers:
            return self.rate_limit_headers
        return "yii2" if self.rate_limit_algorithm == "yii2" else None

    @property
    def access_keys(self) -> tuple[str, ...]:
        """Every accepted key."""
        return (self.access_key, *self.extra_access_keys)

    def to_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-friendly dict."""
        data = attrs.asdict(self)
        data["extra_access_keys"] = list(self.extra_access_keys)
        return data

    def replace(self, **changes: Any) -> SandboxConfig:
        """A copy with some knobs changed (validated again)."""
        return attrs.evolve(self, **changes)
