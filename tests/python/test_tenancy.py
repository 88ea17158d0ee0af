"""Tenant isolation through the ADBC Flight SQL driver: each user's answers are the Parquet
files' rows of their tenants (read with pyarrow), and what only administrators see is refused."""

import os

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import Server, adbc_connect


def tenant_users():
    """(name, password, [tenants]) of the users the harness created, from the environment."""
    spec = os.environ.get("TOKENLEDGER_TENANT_USERS")
    if not spec:
        pytest.skip("run through cargo test (tests/it/server_limits.rs)")
    users = []
    for entry in spec.split(";"):
        name, password, tenants = entry.split(":")
        users.append((name, password, tenants.split(",")))
    return users


def as_user(server: Server, name: str, password: str):
    return adbc_connect(Server(**{**server.__dict__, "user": name, "password": password}))


def expected_by_tenant(spans: pa.Table, tenants) -> dict:
    mine = spans.filter(pc.is_in(spans["tenant"], pa.array(tenants)))
    grouped = mine.group_by("tenant").aggregate([("span_id", "count"), ("input_tokens", "sum")])
    return {r["tenant"]: (r["span_id_count"], r["input_tokens_sum"]) for r in grouped.to_pylist()}


@pytest.mark.parametrize("index", [0, 1])
def test_each_user_gets_their_tenants_totals(server, spans, index):
    name, password, tenants = tenant_users()[index]
    with as_user(server, name, password) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tenant, count(*) AS n, sum(input_tokens) AS tokens FROM spans GROUP BY tenant"
        )
        got = {r["tenant"]: (r["n"], r["tokens"]) for r in cur.fetch_arrow_table().to_pylist()}
    expected = expected_by_tenant(spans, tenants)
    assert got == expected
    assert sorted(got) == sorted(tenants)


def test_a_predicate_naming_another_tenant_finds_nothing(server):
    (name, password, _), (_, _, others) = tenant_users()
    with as_user(server, name, password) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM spans WHERE tenant = ?", (others[0],))
        assert cur.fetchone() == (0,)


def test_explain_and_the_file_list_are_refused(server):
    name, password, _ = tenant_users()[0]
    with as_user(server, name, password) as conn:
        for sql in ["EXPLAIN SELECT count(*) FROM spans", "SELECT * FROM tokenledger_files"]:
            with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as refused:
                cur.execute(sql)
                cur.fetchall()
            assert "administrators only" in str(refused.value)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = {
            t["table_name"]
            for s in objects[0]["catalog_db_schemas"]
            for t in s["db_schema_tables"]
        }
        assert "spans" in tables and "tokenledger_files" not in tables
