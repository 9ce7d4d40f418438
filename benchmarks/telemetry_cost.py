"""What OpenTelemetry costs a campaign: one JSON row on stdout.

    python benchmarks/telemetry_cost.py MODE --url URL --key KEY -n N

MODE is ``absent`` (the opentelemetry package cannot be imported),
``off`` (``telemetry=None``), ``no-sdk`` (the API installed, no SDK
configured: the default of most applications) or ``sdk`` (the SDK recording
every span and measurement, batched as in production, its exporter dropping
them). ``send_messages``
of N at 64 in flight, timed after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any


def configure(mode: str) -> dict[str, Any]:
    """The client's ``telemetry=`` argument for *mode* (imports as it needs)."""
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return {}
    from decisiontelecom_viber import Telemetry

    if mode == "off":
        return {"telemetry": None}
    if mode == "no-sdk":
        return {}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    class Drop(SpanExporter):
        def export(self, spans: Any) -> Any:
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {
        "telemetry": Telemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    }


async def run(url: str, key: str, n: int, options: dict[str, Any]) -> dict[str, Any]:
    from decisiontelecom_viber import AsyncViberClient, ViberMessage

    def messages(start: int, count: int) -> Iterator[ViberMessage]:
        for number in range(start, start + count):
            yield ViberMessage.transactional(
                sender="Bench", receiver=str(380_000_000_000 + number), text="code"
            )

    async with AsyncViberClient(key, base_url=url, **options) as client:
        async for _ in client.send_messages(messages(10**7, 500), concurrency=64):
            pass
        start, cpu = time.perf_counter(), time.process_time()
        accepted = 0
        async for result in client.send_messages(messages(0, n), concurrency=64):
            accepted += result.ok
        return {
            "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu,
            "accepted": accepted,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["absent", "off", "no-sdk", "sdk"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="bench-key")
    parser.add_argument("-n", type=int, default=5_000)
    args = parser.parse_args()
    options = configure(args.mode)
    row = asyncio.run(run(args.url, args.key, args.n, options))
    print(json.dumps({"client": f"sdk, otel {args.mode}", "n": args.n, **row}))


if __name__ == "__main__":
    main()
