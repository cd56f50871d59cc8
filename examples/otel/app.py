"""An app that logs with Python's standard `logging`; the OpenTelemetry
SDK's OTLP/HTTP exporter ships the records to `wasmpipe serve`.

Nothing in it names wasmpipe: the exporter reads where to send from the
standard environment variables,

    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:8080/v1/logs
    OTEL_EXPORTER_OTLP_LOGS_HEADERS="Authorization=Bearer%20<token>"  (when tokens are set)

Run with: python app.py [N]   (N log lines, 10 by default; needs
`pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http`)
"""

import logging
import sys

from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
set_logger_provider(provider)
provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
logging.getLogger().addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
logging.getLogger().setLevel(logging.INFO)

log = logging.getLogger("checkout.payments")
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
for i in range(n):
    if i % 5 == 4:
        log.error("payment failed for order %d", i, extra={"order_id": i, "card": "4111 1111 1111 1111"})
    else:
        log.info("order %d paid", i, extra={"order_id": i})

# Sends what is batched (retrying a server that says to come back later)
# and waits for it, as an app does before it exits; then shuts down.
provider.force_flush(timeout_millis=60_000)
provider.shutdown()
