"""A message's life in the sandbox: its fate, decided once, and its timeline.

Statuses are computed from the timeline at the current API time, so a status
lookup and the callbacks always agree, and no timer is needed per message.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs

from .._enums import MessageStatus, MessageType, SmsStatus, SourceType
from ._config import SandboxConfig


__all__ = ["Timeline", "plan_timeline"]

_VIBER_FAILURES = (
    MessageStatus.UNDELIVERED,
    MessageStatus.ERROR,
    MessageStatus.REJECTED,
)


@attrs.frozen
class Timeline:
    """When a message changes status, in API seconds after acceptance.

    Attributes:
        viber: (offset, status) pairs in time order, starting with pending.
        sms_message_id: ID of the SMS fallback, if the message gets one.
        sms: (offset, status) pairs of the SMS fallback.
        reply_at: Offset of the simulated user reply, if any.
    """

    viber: tuple[tuple[float, MessageStatus], ...]
    sms_message_id: int | None = None
    sms: tuple[tuple[float, SmsStatus], ...] = ()
    reply_at: float | None = None

    def status_at(self, offset: float) -> tuple[MessageStatus, SmsStatus | None]:
        """The Viber and SMS statuses *offset* API seconds after acceptance."""
        status = self.viber[0][1]
        for at, value in self.viber:
            if at > offset:
                break
            status = value
        sms_status = None
        for at, sms_value in self.sms:
            if at > offset:
                break
            sms_status = sms_value
        return status, sms_status

    @property
    def events(self) -> list[tuple[float, MessageStatus, SmsStatus | None]]:
        """Every change of (Viber status, SMS status), in time order."""
        offsets = sorted({at for at, _ in self.viber} | {at for at, _ in self.sms})
        return [(at, *self.status_at(at)) for at in offsets]


def plan_timeline(
    payload: Mapping[str, Any],
    config: SandboxConfig,
    rng: random.Random,
    next_sms_id: int,
) -> Timeline:
    """Decide the fate of an accepted message and when each change happens."""
    sent = config.sent_after
    delivered = sent + config.delivered_after * rng.uniform(0.5, 1.5)
    validity = payload.get("validity_period") or None
    roll = rng.random()
    viber: list[tuple[float, MessageStatus]] = [(0.0, MessageStatus.PENDING)]
    if roll < config.rejected_fraction:
        viber.append((sent, MessageStatus.REJECTED))
    elif roll < config.rejected_fraction + config.error_fraction:
        viber += [(sent, MessageStatus.SENT), (delivered, MessageStatus.ERROR)]
    elif roll < config.rejected_fraction + config.error_fraction + (
        config.undelivered_fraction
    ):
        expiry = float(validity) if validity else config.undelivered_after
        viber += [
            (sent, MessageStatus.SENT),
            (max(expiry, sent), MessageStatus.UNDELIVERED),
        ]
    elif validity is not None and delivered > float(validity):
        # Not delivered before its time to live ran out: expired, not charged.
        viber += [
            (min(sent, float(validity)), MessageStatus.SENT),
            (float(validity), MessageStatus.UNDELIVERED),
        ]
    else:
        viber += [(sent, MessageStatus.SENT), (delivered, MessageStatus.DELIVERED)]
        if rng.random() < config.seen_fraction:
            viber.append((delivered + config.seen_after, MessageStatus.SEEN))
    final_at, final = viber[-1]

    sms_id = None
    sms: tuple[tuple[float, SmsStatus], ...] = ()
    if (
        final in _VIBER_FAILURES
        and payload.get("text_sms")
        and int(payload.get("source_type") or 0) == SourceType.TRANSACTIONAL
    ):
        sms_id = next_sms_id
        outcome = (
            SmsStatus.UNDELIVERABLE
            if rng.random() < config.sms_undeliverable_fraction
            else SmsStatus.DELIVERED
        )
        sms = ((final_at + config.sms_delivered_after, outcome),)
        if config.sms_enroute_status:
            sms = ((final_at, SmsStatus.ENROUTE), *sms)

    reply_at = None
    if (
        MessageType(int(payload.get("message_type") or 0)).is_two_way
        and final in (MessageStatus.DELIVERED, MessageStatus.SEEN)
        and rng.random() < config.reply_fraction
    ):
        reply_at = delivered + config.reply_after
    return Timeline(tuple(viber), sms_id, sms, reply_at)
