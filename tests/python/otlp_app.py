"""An LLM app as tokenledger's users write them: openai-python calls under one OpenTelemetry
instrumentation, exported with the real OTLP exporter to the receiver under test.

Usage: otlp_app.py INSTRUMENTATION PROTOCOL
  INSTRUMENTATION  v2 (OTel GenAI), traceloop (OpenLLMetry), openinference, langfuse;
                   anthropic-openllmetry, anthropic-openinference: anthropic-python calls to a fake
                   Anthropic API reporting cache writes (see ANTHROPIC_USAGE); or
                   retry: no instrumentation, two spans exported one at a time, so that a receiver
                   that refuses the second with 503 sees the exporter's own retry; or
                   hostile: no instrumentation, one export of spans breaking the validation policy
                   beside a good one
  PROTOCOL         http or grpc (langfuse always sends OTLP/HTTP to its own path)
Environment: TOKENLEDGER_OTLP_HTTP / TOKENLEDGER_OTLP_GRPC (host:port of the receiver).

The calls go to a fake OpenAI-compatible server on 127.0.0.1 (started here), whose usage is known:
1,200 prompt tokens of which 1,000 cached, 300 completion tokens of which 200 reasoning. One work
item (keys in W3C baggage, copied onto every span) makes four calls: a plain chat, a tool call, a
streamed chat with usage, and a call that fails with HTTP 500; then its outcome span.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000},
    "completion_tokens_details": {"reasoning_tokens": 200},
}


class FakeOpenAI(BaseHTTPRequestHandler):
    """POST /v1/chat/completions, answered from the request's model and options."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = request["model"]
        if model == "fail":
            return self.answer(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
        base = {"id": "chatcmpl-1", "created": 1767571200, "model": model + "-2025-04-14",
                "system_fingerprint": "fp_test"}
        if request.get("stream"):
            return self.stream(base, request)
        if request.get("tools"):
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup_policy", "arguments": "{\"id\": \"P-1\"}"}}]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": "Your refund is on its way."}
            finish = "stop"
        self.answer(200, {**base, "object": "chat.completion",
                          "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                          "usage": USAGE})

    def stream(self, base, request):
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Refund "}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": "sent."}}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if request.get("stream_options", {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": USAGE})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# The call: 1,000 plain input tokens, 4,000 written to the cache (1,000 of them to a 1-hour
# cache), 2,000 read from it, 300 output. Anthropic's input_tokens excludes the cache.
ANTHROPIC_USAGE = {
    "input_tokens": 1000,
    "cache_creation_input_tokens": 4000,
    "cache_read_input_tokens": 2000,
    "output_tokens": 300,
    "cache_creation": {"ephemeral_5m_input_tokens": 3000, "ephemeral_1h_input_tokens": 1000},
    "service_tier": "standard",
}


class FakeAnthropic(BaseHTTPRequestHandler):
    """POST /v1/messages, answered with ANTHROPIC_USAGE."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({
            "id": "msg_01", "type": "message", "role": "assistant",
            "model": request["model"] + "-20250929",
            "content": [{"type": "text", "text": "Your refund is on its way."}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": ANTHROPIC_USAGE,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def fake_api(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def fake_openai():
    return fake_api(FakeOpenAI) + "/v1"


KEYS = {"tokenledger.work_item_id": "TICKET-1", "tokenledger.workflow": "support_ticket",
        "tokenledger.tenant": "acme", "tokenledger.attempt": "1"}
OUTCOME = {"tokenledger.outcome": "resolved", "tokenledger.resolved_attempt": 1,
           "tokenledger.value_usd": 12.5, **KEYS}


def otlp_exporter(protocol):
    """The real OTLP span exporter, pointed at the receiver under test. With
    TOKENLEDGER_OTLP_SCHEME=https it speaks TLS, trusting the CA in OTEL_EXPORTER_OTLP_CERTIFICATE,
    and sends OTEL_EXPORTER_OTLP_HEADERS (both read by the exporters themselves)."""
    scheme = os.environ.get("TOKENLEDGER_OTLP_SCHEME", "http")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=scheme + "://" + os.environ["TOKENLEDGER_OTLP_GRPC"],
                                insecure=scheme == "http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=scheme + "://" + os.environ["TOKENLEDGER_OTLP_HTTP"] + "/v1/traces")


def otel_provider(protocol):
    """A tracer provider exporting over OTLP, with baggage copied onto every span."""
    from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter(protocol)))
    return provider


def calls(client):
    """The work item's four calls."""
    import openai
    messages = [{"role": "user", "content": "Where is my refund?"}]
    client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
    client.chat.completions.create(model="gpt-4.1-mini", messages=messages, tools=[{
        "type": "function", "function": {"name": "lookup_policy", "parameters": {"type": "object"}}}])
    stream = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    for _ in stream:
        pass
    try:
        client.chat.completions.create(model="fail", messages=messages)
    except openai.APIStatusError:
        pass


def run_otel(instrumentation, protocol):
    from opentelemetry import baggage, context, trace
    provider = otel_provider(protocol)
    trace.set_tracer_provider(provider)
    if instrumentation == "v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif instrumentation == "traceloop":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif instrumentation == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    import openai
    client = openai.OpenAI(base_url=fake_openai(), api_key="test", max_retries=0)
    ctx = context.get_current()
    for key, value in KEYS.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    token = context.attach(ctx)
    try:
        calls(client)
        tracer = trace.get_tracer("tokenledger-test-app")
        with tracer.start_as_current_span("work item closed", attributes=OUTCOME):
            pass
    finally:
        context.detach(token)
    provider.force_flush()
    provider.shutdown()


def run_anthropic(instrumentation, protocol):
    """One work item making one Anthropic call, keys in baggage. anthropic-python traces its own
    calls too (a CLIENT span per call), so each call reaches the receiver twice: once from the
    instrumentation, once from the SDK."""
    from opentelemetry import baggage, context, trace
    provider = otel_provider(protocol)
    trace.set_tracer_provider(provider)
    if instrumentation == "anthropic-openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    else:
        from openinference.instrumentation.anthropic import AnthropicInstrumentor
    AnthropicInstrumentor().instrument(tracer_provider=provider)
    import anthropic
    client = anthropic.Anthropic(base_url=fake_api(FakeAnthropic), api_key="test", max_retries=0)
    ctx = context.get_current()
    for key, value in KEYS.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    token = context.attach(ctx)
    try:
        tracer = trace.get_tracer("tokenledger-test-app")
        with tracer.start_as_current_span("invoke_agent support_ticket"):
            client.messages.create(model="claude-sonnet-4-5", max_tokens=500,
                                   messages=[{"role": "user", "content": "Where is my refund?"}])
    finally:
        context.detach(token)
    provider.force_flush()
    provider.shutdown()


def run_langfuse():
    os.environ["LANGFUSE_HOST"] = "http://" + os.environ["TOKENLEDGER_OTLP_HTTP"]
    os.environ["LANGFUSE_BASE_URL"] = os.environ["LANGFUSE_HOST"]
    os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-test")
    from langfuse import get_client, propagate_attributes
    from langfuse.openai import OpenAI
    langfuse = get_client()
    client = OpenAI(base_url=fake_openai(), api_key="test", max_retries=0)
    metadata = {key.split(".", 1)[1]: value for key, value in KEYS.items()}
    with langfuse.start_as_current_observation(as_type="span", name="support_ticket"):
        with propagate_attributes(metadata=metadata):
            calls(client)
            with langfuse.start_as_current_observation(
                    as_type="span", name="work item closed",
                    metadata={key.split(".", 1)[1]: str(v) for key, v in OUTCOME.items()}):
                pass
    langfuse.flush()
    langfuse.shutdown()


def run_retry(protocol):
    """Two spans, each exported when it ends (SimpleSpanProcessor): the exporter must retry the
    second until the receiver takes it, or this exits non-zero."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    exporter = otlp_exporter(protocol)
    results = []

    class ExportEach(SpanProcessor):
        def on_end(self, span):
            results.append(exporter.export([span]))

    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(ExportEach())
    tracer = provider.get_tracer("tokenledger-test-app")
    for n in range(2):
        with tracer.start_as_current_span(f"step {n}", attributes=KEYS):
            pass
    if results != [SpanExportResult.SUCCESS] * 2:
        sys.exit(f"exports: {results}")


# What `hostile` sends: span name -> attributes. The first is a good call; each of the others
# breaks one rule of tokenledger's validation policy (docs/integrity.md).
HOSTILE = {
    "good call": {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20},
    "negative tokens": {"gen_ai.usage.input_tokens": -5},
    "tokens as a huge double": {"gen_ai.usage.input_tokens": 1e19},
    "tokens as a huge string": {"gen_ai.usage.input_tokens": "99999999999999999999"},
    "cached above input": {"gen_ai.usage.input_tokens": 10,
                           "gen_ai.usage.cache_read.input_tokens": 1000},
    "reasoning above output": {"gen_ai.usage.output_tokens": 10,
                               "gen_ai.usage.reasoning.output_tokens": 50},
    "negative cost": {"gen_ai.usage.input_tokens": 10, "tokenledger.cost_usd": -3.0},
    "enormous cost": {"gen_ai.usage.input_tokens": 10, "tokenledger.cost_usd": 1e308},
}


def run_hostile(protocol):
    """Careless and hostile spans in one export, as an app's real exporter sends them, plus two
    with impossible times (1970, a 1 ns span; and 2554). Exits non-zero unless the export
    succeeds: refusing some spans is a partial success, not a failure."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    ended = []

    class Collect(SpanProcessor):
        def on_end(self, span):
            ended.append(span)

    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(Collect())
    tracer = provider.get_tracer("tokenledger-test-app")
    llm = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1-mini", **KEYS}
    for name, attributes in HOSTILE.items():
        with tracer.start_as_current_span(name, attributes={**llm, **attributes}):
            pass
    for name, start in [("started in 1970", 1), ("started in 2554", 18_400_000_000_000_000_000)]:
        span = tracer.start_span(name, attributes=llm, start_time=start)
        span.end(end_time=start + 1)
    result = otlp_exporter(protocol).export(ended)
    if result != SpanExportResult.SUCCESS:
        sys.exit(f"export: {result}")


if __name__ == "__main__":
    instrumentation, protocol = sys.argv[1], sys.argv[2]
    if instrumentation == "retry":
        run_retry(protocol)
    elif instrumentation == "hostile":
        run_hostile(protocol)
    elif instrumentation.startswith("anthropic-"):
        run_anthropic(instrumentation, protocol)
    elif instrumentation == "langfuse":
        run_langfuse()
    else:
        run_otel(instrumentation, protocol)
