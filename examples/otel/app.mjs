// A Node app that logs with the OpenTelemetry SDK; its OTLP/HTTP exporter
// ships the records to `wasmpipe serve`, as protobuf, or as OTLP/JSON when
// OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=http/json.
//
// Nothing in it names wasmpipe: the exporter reads where to send from the
// standard environment variables,
//
//   OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:8080/v1/logs
//   OTEL_EXPORTER_OTLP_LOGS_HEADERS="Authorization=Bearer%20<token>"  (when tokens are set)
//
// Run with: npm install && node app.mjs [N]   (N log lines, 10 by default)

import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';

const json = process.env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL === 'http/json';
const { OTLPLogExporter } = await import(
  json ? '@opentelemetry/exporter-logs-otlp-http' : '@opentelemetry/exporter-logs-otlp-proto'
);

const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'cart' }),
  processors: [new BatchLogRecordProcessor({ exporter: new OTLPLogExporter() })],
});
const logger = provider.getLogger('cart.api', '2.0.0');

const n = Number(process.argv[2] ?? 10);
for (let i = 0; i < n; i++) {
  if (i % 5 === 4) {
    logger.emit({
      severityNumber: 17,
      severityText: 'ERROR',
      body: `checkout refused for cart ${i}`,
      attributes: { cart_id: i, card: '5500 0000 0000 0004' },
    });
  } else {
    logger.emit({ severityNumber: 9, severityText: 'INFO', body: `cart ${i} updated`, attributes: { cart_id: i } });
  }
}

// Flushes what is batched, as an app does when it exits.
await provider.shutdown();
