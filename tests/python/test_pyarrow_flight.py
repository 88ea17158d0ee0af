"""Plain `pyarrow.flight`, the way scripts and custom tools speak Flight SQL without a driver:
Basic auth to a Bearer token, GetFlightInfo, then DoGet on the endpoint's ticket."""

import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from conftest import TOTALS_SQL, server_peak_rss_bytes, totals_by_workflow


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def statement(sql: str) -> flight.FlightDescriptor:
    """A CommandStatementQuery packed in google.protobuf.Any, encoded by hand so this test does
    not share any code with the server or the drivers."""
    command = _field(1, sql.encode())
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return flight.FlightDescriptor.for_command(_field(1, type_url) + _field(2, command))


def client(server) -> flight.FlightClient:
    return flight.FlightClient(server.uri, tls_root_certs=server.tls_root_certs)


@pytest.fixture(scope="module")
def options(server):
    token = client(server).authenticate_basic_token(server.user, server.password)
    return flight.FlightCallOptions(headers=[token])


def run(server, options, sql):
    """FlightInfo and a reader for its single endpoint."""
    c = client(server)
    info = c.get_flight_info(statement(sql), options)
    assert len(info.endpoints) == 1
    return info, c.do_get(info.endpoints[0].ticket, options)


def test_basic_auth_returns_a_bearer_token(server):
    key, value = client(server).authenticate_basic_token(server.user, server.password)
    assert key == b"authorization"
    assert value.startswith(b"Bearer ")


def test_totals_match_and_do_get_schema_equals_flight_info_schema(server, options, spans):
    info, reader = run(server, options, TOTALS_SQL)
    table = reader.read_all()
    assert reader.schema.equals(info.schema, check_metadata=False)
    assert table.schema.field("workflow").type == pa.string()
    got = {r["workflow"]: (r["spans"], r["input_tokens"]) for r in table.to_pylist()}
    assert got == totals_by_workflow(spans)


def test_no_token_is_unauthenticated(server):
    with pytest.raises(flight.FlightUnauthenticatedError):
        client(server).get_flight_info(statement("SELECT 1"))


def test_wrong_password_is_unauthenticated(server):
    with pytest.raises(flight.FlightUnauthenticatedError):
        client(server).authenticate_basic_token(server.user, "not the password")


def test_forged_token_is_unauthenticated(server):
    forged = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        client(server).get_flight_info(statement("SELECT 1"), forged)


def test_dropped_stream_leaves_the_server_serving(server, options):
    _, reader = run(server, options, "SELECT value FROM generate_series(1, 100000000)")
    first = reader.read_chunk().data
    assert first.num_rows > 0
    reader.cancel()
    _, again = run(server, options, "SELECT 41 + 1 AS answer")
    assert again.read_all().to_pylist() == [{"answer": 42}]


def test_large_result_streams_in_bounded_memory(server, options):
    rows, pad = 4_000_000, 250
    sql = f"SELECT value, repeat('x', {pad}) AS pad FROM generate_series(1, {rows})"
    before = server_peak_rss_bytes(server.pid)
    _, reader = run(server, options, sql)
    seen = total = 0
    started = time.monotonic()
    for chunk in reader:
        batch = chunk.data
        seen += batch.num_rows
        total += pc.sum(batch.column("value")).as_py()
    elapsed = time.monotonic() - started
    assert seen == rows
    assert total == rows * (rows + 1) // 2
    result_bytes = rows * (8 + pad)
    grown = server_peak_rss_bytes(server.pid) - before
    print(f"streamed {result_bytes / 1e9:.2f} GB in {elapsed:.1f} s; server peak RSS grew {grown / 1e6:.0f} MB")
    # Collecting the result would need all of it in memory; streaming needs a few batches.
    assert grown < result_bytes / 10


def test_tls_server_refuses_plaintext_and_untrusted_clients(server):
    if not server.tls_root_certs:
        pytest.skip("the server under test speaks plaintext")
    plaintext = flight.FlightClient(f"grpc://{server.host}:{server.port}")
    # gRPC reports the failed exchange as unavailable or internal, depending on timing.
    with pytest.raises(flight.FlightError):
        plaintext.authenticate_basic_token(server.user, server.password)
    # Without the test CA the server's certificate is not trusted.
    untrusted = flight.FlightClient(server.uri)
    with pytest.raises(flight.FlightUnavailableError, match="(?i)certificate verify failed"):
        untrusted.get_flight_info(statement("SELECT 1"))
