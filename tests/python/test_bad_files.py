"""Bad files beside good ones under `tokenledger serve`, through the ADBC driver and plain
pyarrow.flight. The harness (tests/it/corruption.rs) serves a generated data set with two extra
spans files:
- `zz_not_parquet.parquet`: the 36 bytes `PAR1 this is not parquet at all PAR1` (issue #12);
- `zz_flipped.parquet`: a copy of a real spans file with one bit flipped in the middle of its
  `input_tokens` data page, behind an intact footer.
Expected values come from pyarrow reading the good files.
"""

import os
import pathlib
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import adbc_connect

NOT_PARQUET = "zz_not_parquet.parquet"
FLIPPED = "zz_flipped.parquet"
TOTALS = "SELECT count(*) AS n, sum(input_tokens) AS tokens FROM spans"
QUARANTINED = (
    "SELECT path, error FROM tokenledger_files WHERE status = 'quarantined' ORDER BY path"
)


def good_totals(data: pathlib.Path) -> tuple:
    files = [p for p in (data / "spans").rglob("*.parquet") if not p.name.startswith("zz_")]
    spans = pa.concat_tables([pq.read_table(p) for p in files])
    return spans.num_rows, pc.sum(spans["input_tokens"]).as_py()


def server_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_bad_files_never_deny_the_table_to_a_driver(server):
    with adbc_connect(server) as conn, conn.cursor() as cur:
        # The file that is not Parquet was left out when the table was listed. The flipped page
        # is met only by a scan: that query fails and names the file ...
        with pytest.raises(Exception) as failure:
            cur.execute(TOTALS)
            cur.fetchall()
        assert FLIPPED in str(failure.value)
        assert re.search("(?i)data.?loss", str(failure.value)), str(failure.value)
        assert "checksum mismatch" in str(failure.value)
        # ... and every later query answers from the good files.
        cur.execute(TOTALS)
        assert cur.fetchone() == good_totals(server.data)
        cur.execute(QUARANTINED)
        quarantined = [(pathlib.Path(path).name, error) for path, error in cur.fetchall()]
    assert [name for name, _ in quarantined] == [FLIPPED, NOT_PARQUET]
    flipped, not_parquet = (error for _, error in quarantined)
    assert "Page CRC checksum mismatch" in flipped
    assert "the footer claims 543976545 bytes of metadata" in not_parquet
    assert "but the whole file has 36 bytes" in not_parquet
    assert server_is_running(server.pid)


def test_other_clients_keep_getting_answers(server):
    # Runs after the driver's test: the same server, still up, still answering.
    import pyarrow.flight as flight
    from test_pyarrow_flight import statement

    client = flight.FlightClient(server.uri)
    token = client.authenticate_basic_token(server.user, server.password)
    options = flight.FlightCallOptions(headers=[token])
    info = client.get_flight_info(statement(TOTALS), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert (table["n"][0].as_py(), table["tokens"][0].as_py()) == good_totals(server.data)
    assert server_is_running(server.pid)
