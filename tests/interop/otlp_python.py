"""Interoperability with the OpenTelemetry Python SDK and protobuf runtime.

Run by .ci/interop, never by cargo. Modes:

  produce OUT.pb EXPECTED.json   spans from the Python SDK, encoded by its OTLP
                                 exporter code, and a summary of what was made
  compare EXPECTED.json STATS.json
                                 gent's `stats --json` agrees with the summary
  export GRPC_ENDPOINT HTTP_URL TRACES OUT.json
                                 the SDK's own OTLP exporters (gRPC, then HTTP)
                                 send TRACES traces of 3 spans each to a running
                                 gent; the counts sent go to OUT.json
  metric URL SAMPLE             one sample's value from a /metrics page
  receive GRPC_PORT HTTP_PORT COUNTS.json
                                 a third-party OTLP receiver: a gRPC TraceService
                                 (grpcio + the OpenTelemetry protobuf bindings)
                                 and an OTLP/HTTP endpoint (protobuf, gzip), both
                                 parsing every request with the protobuf runtime
                                 and counting spans into COUNTS.json; runs until
                                 killed
  check PROTO_FILE JSONL_FILE COUNT
                                 gent's OTLP protobuf parses with the official
                                 protobuf runtime, its OTLP JSON lines parse as
                                 proto3 JSON once ids are hex-decoded (the one
                                 difference OTLP JSON specifies), and both hold
                                 the same COUNT spans
"""

import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def produce(out_pb, expected_json):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    spans = []
    for service in ["checkout", "cart"]:
        provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": "h1"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("interop", "1.0")
        for i in range(5):
            with tracer.start_as_current_span("GET /" + service, kind=trace.SpanKind.SERVER) as root:
                root.set_attribute("http.status_code", 200 + i)
                root.set_attribute("ratio", 0.25 * i)
                root.set_attribute("tags", ["a", "b"])
                root.add_event("cache miss", {"key": "k%d" % i})
                with tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT) as child:
                    child.set_attribute("db.system", "postgresql")
                    if i % 2:
                        child.set_status(trace.Status(trace.StatusCode.ERROR, "timeout"))
                    with tracer.start_as_current_span("decode"):
                        pass
    spans = exporter.get_finished_spans()
    request = encode_spans(spans)
    with open(out_pb, "wb") as f:
        f.write(request.SerializeToString())
    expected = {
        "traces": len({s.context.trace_id for s in spans}),
        "spans": len(spans),
        "services": 2,
        "span_names": len({s.name for s in spans}),
        "max_depth": 3,
        "orphan_spans": 0,
    }
    with open(expected_json, "w") as f:
        json.dump(expected, f)


def export(grpc_endpoint, http_url, traces, out_json):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    sent = {}
    for name, exporter in [("grpc", GrpcExporter(endpoint=grpc_endpoint, insecure=True)),
                           ("http", HttpExporter(endpoint=http_url))]:
        results = []

        class Recording:
            """Passes spans to the real exporter and keeps its verdicts."""

            def export(self, spans):
                result = exporter.export(spans)
                results.append((len(spans), result))
                return result

            def shutdown(self):
                exporter.shutdown()

            def force_flush(self, timeout_millis=30000):
                return True

        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-" + name}))
        provider.add_span_processor(BatchSpanProcessor(Recording(), max_export_batch_size=256))
        tracer = provider.get_tracer("interop")
        for i in range(int(traces)):
            with tracer.start_as_current_span("GET /item", kind=trace.SpanKind.SERVER) as root:
                root.set_attribute("item", i)
                with tracer.start_as_current_span("cache", kind=trace.SpanKind.CLIENT):
                    pass
                with tracer.start_as_current_span("db", kind=trace.SpanKind.CLIENT):
                    pass
        provider.shutdown()
        failed = [n for n, r in results if r != SpanExportResult.SUCCESS]
        if failed:
            sys.exit("%s exporter: %d batches failed" % (name, len(failed)))
        sent[name] = sum(n for n, _ in results)
    json.dump(sent, open(out_json, "w"))
    print("python sdk exporters -> gent: %s spans sent" % sent)


def metric(url, sample):
    import urllib.request
    for line in urllib.request.urlopen(url).read().decode().splitlines():
        if line.startswith(sample + " "):
            print(int(float(line.split()[-1])))
            return
    sys.exit("%s not found at %s" % (sample, url))


def compare(expected_json, stats_json):
    expected = json.load(open(expected_json))
    stats = json.loads(open(stats_json).read().strip().splitlines()[-1])
    wrong = {k: (v, stats.get(k)) for k, v in expected.items() if stats.get(k) != v}
    if wrong:
        sys.exit("gent stats disagrees with the Python SDK (expected, got): %s" % wrong)
    print("python sdk -> gent: %d spans in %d traces agree" % (expected["spans"], expected["traces"]))


def span_rows(request):
    rows = []
    for rs in request.resource_spans:
        service = [a.value.string_value for a in rs.resource.attributes if a.key == "service.name"]
        for ss in rs.scope_spans:
            for s in ss.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8 or len(s.parent_span_id) not in (0, 8):
                    sys.exit("bad id lengths in span %r" % s.name)
                rows.append((service[0], s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind,
                             s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                             tuple(sorted((a.key, a.value.SerializeToString()) for a in s.attributes)),
                             len(s.events), len(s.links)))
    return sorted(rows)


def hex_ids_to_base64(value, key=None):
    """OTLP JSON writes ids as hex; proto3 JSON wants base64. Nothing else differs."""
    if isinstance(value, dict):
        return {k: hex_ids_to_base64(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [hex_ids_to_base64(v) for v in value]
    if key in ("traceId", "spanId", "parentSpanId"):
        return base64.b64encode(bytes.fromhex(value)).decode()
    return value


def check(proto_file, jsonl_file, count):
    count = int(count)
    from_proto = span_rows(ExportTraceServiceRequest.FromString(open(proto_file, "rb").read()))
    from_json = []
    for n, line in enumerate(open(jsonl_file), 1):
        request = ExportTraceServiceRequest()
        try:
            json_format.ParseDict(hex_ids_to_base64(json.loads(line)), request)
        except json_format.ParseError as e:
            sys.exit("%s:%d: not valid OTLP JSON: %s" % (jsonl_file, n, e))
        from_json.extend(span_rows(request))
    from_json.sort()
    if len(from_proto) != count or len(from_json) != count:
        sys.exit("expected %d spans, protobuf has %d, JSON has %d" % (count, len(from_proto), len(from_json)))
    if from_proto != from_json:
        first = next(i for i, (a, b) in enumerate(zip(from_proto, from_json)) if a != b)
        sys.exit("protobuf and JSON disagree at span %d: %r vs %r" % (first, from_proto[first], from_json[first]))
    print("gent -> python protobuf: %d spans agree in %s and %s" % (count, proto_file, jsonl_file))


def receive(grpc_port, http_port, counts_json):
    import gzip
    import os
    import threading
    from concurrent import futures
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    lock = threading.Lock()
    counts = {"grpc_spans": 0, "grpc_requests": 0, "http_spans": 0, "http_requests": 0, "services": []}
    services = set()

    def record(protocol, request):
        spans = 0
        with lock:
            for rs in request.resource_spans:
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        services.add(kv.value.string_value)
                for ss in rs.scope_spans:
                    spans += len(ss.spans)
            counts[protocol + "_spans"] += spans
            counts[protocol + "_requests"] += 1
            counts["services"] = sorted(services)
            tmp = counts_json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(counts, f)
            os.replace(tmp, counts_json)

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            record("grpc", request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 64 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port("127.0.0.1:%s" % grpc_port)
    server.start()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(400)
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            record("http", request)
            out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(http_port)), Handler).serve_forever()


if __name__ == "__main__":
    modes = {"produce": produce, "compare": compare, "check": check, "export": export, "metric": metric, "receive": receive}
    modes[sys.argv[1]](*sys.argv[2:])
