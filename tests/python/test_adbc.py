"""The ADBC Flight SQL driver (Go driver behind Python's DBAPI), as data teams and
ADBC-based BI tools use it."""

import math
import os

import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import (
    TOTALS_SQL,
    adbc_connect as connect,
    count_where_model_and_min_input,
    model_with_most_large_calls,
    table_columns,
    totals_by_workflow,
)


@pytest.fixture(scope="module")
def conn(server):
    with connect(server) as connection:
        yield connection


def test_totals_match_the_parquet_files(conn, spans):
    with conn.cursor() as cur:
        cur.execute(TOTALS_SQL)
        table = cur.fetch_arrow_table()
    got = {r["workflow"]: (r["spans"], r["input_tokens"]) for r in table.to_pylist()}
    assert got == totals_by_workflow(spans)
    assert sum(n for n, _ in got.values()) == spans.num_rows


def test_strings_arrive_as_plain_utf8(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT model, workflow FROM spans LIMIT 5")
        table = cur.fetch_arrow_table()
    assert table.schema.field("model").type == pa.string()
    assert table.schema.field("workflow").type == pa.string()
    assert table.num_rows == 5


def test_execute_with_parameters(conn, spans):
    model = model_with_most_large_calls(spans, 1000)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM spans WHERE model = ? AND input_tokens > ?", (model, 1000))
        (n,) = cur.fetchone()
    assert n == count_where_model_and_min_input(spans, model, 1000)
    assert n > 0


def test_get_objects_lists_tables_views_and_columns(conn, spans):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["tokenledger"]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert "public" in schemas
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    for table in ["spans", "outcomes", "model_prices", "baselines"]:
        assert tables[table]["table_type"] == "TABLE"
    for view in ["cost_per_outcome", "retry_tail", "allocation"]:
        assert tables[view]["table_type"] == "VIEW"
    columns = [c["column_name"] for c in tables["spans"]["table_columns"]]
    assert columns == table_columns(spans)


def test_token_economics_functions_are_callable(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT effective_cost(1.0, 0.7) AS per_resolved, effective_cost(1.0, 0.9) AS at_90")
        per_resolved, at_90 = cur.fetchone()
    assert math.isclose(per_resolved, 1 / 0.7)
    # The example: 90 % -> 70 % first-try success raises the cost 28.6 %, not 20 %.
    assert round(per_resolved / at_90 - 1, 3) == 0.286


def test_report_view_runs(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM allocation")
        (workflows,) = cur.fetchone()
    assert workflows == 4


def test_wrong_password_is_refused(server):
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
        with connect(server, password="not the password") as connection:
            with connection.cursor() as cur:
                cur.execute("SELECT 1")


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE stolen AS SELECT * FROM spans",
        "INSERT INTO spans SELECT * FROM spans",
        "COPY (SELECT 1) TO '/tmp/tokenledger-copy-test.parquet'",
        "SET datafusion.execution.batch_size = 1",
    ],
)
def test_writes_and_settings_are_refused(conn, sql):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)permission|read-only|not allowed"):
            cur.execute(sql)
    assert not os.path.exists("/tmp/tokenledger-copy-test.parquet")


def test_bad_sql_is_invalid_argument_with_datafusion_message(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)invalid.argument") as err:
            cur.execute("SELEC 1")
    assert "SELEC" in str(err.value)


def test_a_bad_function_argument_while_running_is_invalid_argument(conn):
    # The rate comes from a column, so the error arises while the query runs, not at planning.
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)invalid.argument") as err:
            cur.execute("SELECT effective_cost(1.0, CAST(attempt AS DOUBLE) + 0.5) FROM spans")
            cur.fetchall()
    assert "effective_cost: success rate p must be in [0, 1]" in str(err.value)


def test_unknown_table_is_not_found(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)not.?found") as err:
            cur.execute("SELECT * FROM no_such_table")
    assert "no_such_table" in str(err.value)
