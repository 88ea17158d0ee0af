"""flightsql-dbapi, the Flight SQL DBAPI driver and SQLAlchemy dialect Superset uses. Runs in its
own venv (.venv-dbapi): it pins SQLAlchemy < 2."""

import pytest
import sqlalchemy
from flightsql import FlightSQLClient, connect

from conftest import (
    TOTALS_SQL,
    count_where_model_and_min_input,
    model_with_most_large_calls,
    table_columns,
    totals_by_workflow,
)


@pytest.fixture(scope="module")
def conn(server):
    client = FlightSQLClient(
        host=server.host, port=server.port, user=server.user, password=server.password, insecure=True
    )
    connection = connect(client)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def engine(server):
    url = f"datafusion://{server.user}:{server.password}@{server.host}:{server.port}?insecure=true"
    return sqlalchemy.create_engine(url)


def test_dbapi_totals_match_the_parquet_files(conn, spans):
    cur = conn.cursor()
    cur.execute(TOTALS_SQL)
    got = {workflow: (n, tokens) for workflow, n, tokens in cur.fetchall()}
    assert got == totals_by_workflow(spans)


def test_dbapi_parameters(conn, spans):
    model = model_with_most_large_calls(spans, 1000)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM spans WHERE model = ? AND input_tokens > ?", [model, 1000])
    (n,) = cur.fetchall()[0]
    assert n == count_where_model_and_min_input(spans, model, 1000)
    assert n > 0


def test_superset_probe_and_query_through_sqlalchemy(engine, spans):
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        rows = connection.execute(sqlalchemy.text(TOTALS_SQL)).fetchall()
    assert {workflow: (n, tokens) for workflow, n, tokens in rows} == totals_by_workflow(spans)


def test_reflection_sees_tables_views_and_text_columns(engine, spans):
    inspector = sqlalchemy.inspect(engine)
    tables = inspector.get_table_names()
    assert {"spans", "outcomes", "model_prices", "baselines"} <= set(tables)
    columns = {c["name"]: c["type"] for c in inspector.get_columns("spans")}
    assert list(columns) == table_columns(spans)
    # Utf8View would show as BLOB here; plain Utf8 is a string type.
    assert isinstance(columns["model"], sqlalchemy.types.String), columns["model"]
    assert isinstance(columns["input_tokens"], sqlalchemy.types.Integer), columns["input_tokens"]


def test_dbapi_bad_sql_raises_with_the_message(conn):
    cur = conn.cursor()
    with pytest.raises(Exception, match="(?i)invalid.argument") as err:
        cur.execute("SELEC 1")
    assert "SELEC" in str(err.value)
