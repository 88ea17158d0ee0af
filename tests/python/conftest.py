"""Shared setup of the Flight SQL client tests.

These tests run against a `tokenledger serve` that the Rust test harness (tests/it/flight_clients.rs)
starts; it passes the server's address, a user's credentials and the served data directory in the
environment. Expected values come from reading the same Parquet files with pyarrow, never from
tokenledger itself.
"""

import os
import pathlib
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest


@dataclass(frozen=True)
class Server:
    """The server under test, as the harness describes it."""

    host: str
    port: int
    user: str
    password: str
    data: pathlib.Path
    pid: int
    tls_root_certs: Optional[bytes]

    @property
    def uri(self) -> str:
        scheme = "grpc+tls" if self.tls_root_certs else "grpc"
        return f"{scheme}://{self.host}:{self.port}"


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run these tests through `cargo test` (tests/it/flight_clients.rs)")
    return value


@pytest.fixture(scope="session")
def server() -> Server:
    tls = os.environ.get("TOKENLEDGER_TLS_ROOT_CERTS")
    return Server(
        host="127.0.0.1",
        port=int(_required("TOKENLEDGER_FLIGHT_PORT")),
        user=_required("TOKENLEDGER_FLIGHT_USER"),
        password=_required("TOKENLEDGER_FLIGHT_PASSWORD"),
        data=pathlib.Path(_required("TOKENLEDGER_DATA_DIR")),
        pid=int(_required("TOKENLEDGER_SERVER_PID")),
        tls_root_certs=pathlib.Path(tls).read_bytes() if tls else None,
    )


@pytest.fixture(scope="session")
def spans(server: Server) -> pa.Table:
    """The spans table as pyarrow reads it straight from the Parquet files."""
    return ds.dataset(server.data / "spans", format="parquet").to_table()


# Columns added to `spans` after the sample files were written: the table has them (NULL for
# those files), the files do not.
NEWER_SPAN_COLUMNS = [
    "cache_write_input_tokens",
    "service_tier",
    "cache_write_1h_input_tokens",
    "cost_source",
]


def table_columns(spans: pa.Table) -> list:
    """The spans table's columns as a client should list them: the files' columns, then the
    newer ones the files lack."""
    names = spans.schema.names
    return names + [c for c in NEWER_SPAN_COLUMNS if c not in names]


def adbc_connect(server: Server, password: Optional[str] = None):
    """A DBAPI connection through the ADBC Flight SQL driver, as the server's user."""
    import adbc_driver_flightsql.dbapi as flight_sql
    from adbc_driver_flightsql import DatabaseOptions

    options = {"username": server.user, "password": password or server.password}
    if server.tls_root_certs:
        options[DatabaseOptions.TLS_ROOT_CERTS.value] = server.tls_root_certs.decode()
    return flight_sql.connect(server.uri, db_kwargs=options)


def totals_by_workflow(spans: pa.Table) -> dict:
    """{workflow: (span count, sum of input_tokens)} computed by pyarrow."""
    grouped = spans.group_by("workflow").aggregate([("span_id", "count"), ("input_tokens", "sum")])
    return {
        row["workflow"]: (row["span_id_count"], row["input_tokens_sum"])
        for row in grouped.to_pylist()
    }


TOTALS_SQL = (
    "SELECT workflow, count(span_id) AS spans, sum(input_tokens) AS input_tokens "
    "FROM spans GROUP BY workflow ORDER BY workflow"
)


def model_with_most_large_calls(spans: pa.Table, min_input: int) -> str:
    """The model with the most calls over `min_input` input tokens."""
    large = spans.filter(pc.greater(spans["input_tokens"], min_input))
    counts = pc.value_counts(large["model"].drop_null()).to_pylist()
    return max(counts, key=lambda c: c["counts"])["values"]


def count_where_model_and_min_input(spans: pa.Table, model: str, min_input: int) -> int:
    """Rows with this model and more than `min_input` input tokens, counted by pyarrow."""
    mask = pc.and_(pc.equal(spans["model"], model), pc.greater(spans["input_tokens"], min_input))
    return pc.sum(pc.cast(mask, pa.int64())).as_py() or 0


def server_peak_rss_bytes(pid: int) -> int:
    """The server process's peak resident memory (VmHWM) from /proc."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
