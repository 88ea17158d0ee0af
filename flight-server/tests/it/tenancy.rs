//! Tenant isolation through arrow-flight's Flight SQL client, tried the ways an analyst could
//! try to see another tenant's rows. Expected rows come from the sample's Parquet files read
//! with the parquet crate and filtered here; report views are checked against an unrestricted
//! server over a copy of the data that holds only the tenant's rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::Int64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::CommandGetTables;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokenledger_engine::reports::VIEWS;
use tokenledger_flight_server::Grant;
use tonic::Code;

use crate::support::{Setup, TestServer, login, rows, run, status};

const ANA_TENANT: &str = "acme-retail";
const BO_TENANT: &str = "umbrella-legal";

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/sample")
}

fn grant(tenants: &[&str]) -> Grant {
    Grant::from_tenants(&tenants.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
}

/// Every row of a table's Parquet files under `data`, as one batch.
fn table_rows(data: &Path, table: &str) -> RecordBatch {
    let mut batches = Vec::new();
    let mut files: Vec<PathBuf> = walk(&data.join(table));
    files.sort();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// The rows of `batch` whose tenant is `tenant` (or, with `shared`, has none).
fn of_tenant(batch: &RecordBatch, tenant: &str, shared: bool) -> RecordBatch {
    let tenants = batch
        .column_by_name("tenant")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let keep: arrow::array::BooleanArray = (0..tenants.len())
        .map(|i| {
            Some(if tenants.is_null(i) {
                shared
            } else {
                tenants.value(i) == tenant
            })
        })
        .collect();
    filter_record_batch(batch, &keep).unwrap()
}

fn project(batch: &RecordBatch, columns: &[&str]) -> RecordBatch {
    let indices: Vec<usize> = columns
        .iter()
        .map(|c| batch.schema().index_of(c).unwrap())
        .collect();
    batch.project(&indices).unwrap()
}

/// A copy of the sample holding only `tenant`'s rows (and every price and shared baseline).
fn tenant_copy(tenant: &str, to: &Path) {
    for table in ["spans", "outcomes", "baselines", "model_prices"] {
        let all = table_rows(&sample(), table);
        let kept = if all.schema().index_of("tenant").is_ok() {
            of_tenant(&all, tenant, table == "baselines")
        } else {
            all
        };
        std::fs::create_dir_all(to.join(table)).unwrap();
        let file = std::fs::File::create(to.join(table).join("part-0.parquet")).unwrap();
        let mut writer = ArrowWriter::try_new(file, kept.schema(), None).unwrap();
        writer.write(&kept).unwrap();
        writer.close().unwrap();
    }
}

/// Every span of the sample, read from its files.
pub fn all_spans() -> RecordBatch {
    table_rows(&sample(), "spans")
}

/// `workflow|sum(input_tokens)` rows of the whole sample, as [`crate::support::rows`] shows them.
pub fn tokens_by_workflow() -> Vec<String> {
    let spans = all_spans();
    let workflows = spans.column_by_name("workflow").unwrap().as_string::<i32>();
    let tokens = spans
        .column_by_name("input_tokens")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for i in (0..spans.num_rows()).filter(|&i| tokens.is_valid(i)) {
        *sums.entry(workflows.value(i).to_string()).or_default() += tokens.value(i);
    }
    let mut out: Vec<String> = sums.into_iter().map(|(w, t)| format!("{w}|{t}")).collect();
    out.sort();
    out
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn server() -> TestServer {
    Setup::new(sample())
        .user("admin", "pw-admin", grant(&["*"]))
        .user("ana", "pw-ana", grant(&[ANA_TENANT]))
        .user("bo", "pw-bo", grant(&[BO_TENANT, "hooli-devices"]))
        .start()
        .await
}

const SPAN_COLUMNS: &[&str] = &[
    "span_id",
    "trace_id",
    "tenant",
    "workflow",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "start_time",
];
const OUTCOME_COLUMNS: &[&str] = &[
    "work_item_id",
    "tenant",
    "outcome",
    "value_usd",
    "closed_at",
];
const BASELINE_COLUMNS: &[&str] = &["workflow", "tenant", "bpo_unit_price_usd", "valid_from"];

#[tokio::test]
async fn a_user_sees_exactly_their_tenants_rows_in_every_table() {
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    for (table, columns, shared) in [
        ("spans", SPAN_COLUMNS, false),
        ("outcomes", OUTCOME_COLUMNS, false),
        ("baselines", BASELINE_COLUMNS, true),
    ] {
        let expected = rows(&[project(
            &of_tenant(&table_rows(&sample(), table), ANA_TENANT, shared),
            columns,
        )]);
        assert!(
            !expected.is_empty(),
            "{table}: the sample has {ANA_TENANT} rows"
        );
        let sql = format!("SELECT {} FROM {table}", columns.join(", "));
        let got = rows(&run(&mut ana, &sql).await.unwrap());
        assert_eq!(got, expected, "{table}");
        // Fully qualified names reach the same filtered table.
        let qualified = format!(
            "SELECT {} FROM tokenledger.public.{table}",
            columns.join(", ")
        );
        assert_eq!(
            rows(&run(&mut ana, &qualified).await.unwrap()),
            expected,
            "{table} qualified"
        );
    }
    // Prices belong to nobody: everyone sees them all.
    let prices = table_rows(&sample(), "model_prices").num_rows() as i64;
    let got = single_i64(
        &run(&mut ana, "SELECT count(*) FROM model_prices")
            .await
            .unwrap(),
    );
    assert_eq!(got, prices);
}

#[tokio::test]
async fn every_sql_form_returns_only_the_users_rows() {
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    let spans = of_tenant(&table_rows(&sample(), "spans"), ANA_TENANT, false);
    let count = spans.num_rows() as i64;
    let starts = spans
        .column_by_name("start_time")
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let (first, last) = (
        arrow::compute::min(starts).unwrap(),
        arrow::compute::max(starts).unwrap(),
    );
    let one = |sql: &'static str, expected: i64| (sql, expected);
    for (sql, expected) in [
        one("SELECT count(*) FROM spans", count),
        // Statistics could answer these three without reading a row.
        one("SELECT count(*) FROM (SELECT * FROM spans)", count),
        one("SELECT CAST(min(start_time) AS BIGINT) FROM spans", first),
        one("SELECT CAST(max(start_time) AS BIGINT) FROM spans", last),
        one("SELECT count(DISTINCT tenant) FROM spans", 1),
        one(
            "SELECT count(*) FROM spans WHERE trace_id IN \
             (SELECT trace_id FROM spans WHERE tenant <> 'acme-retail')",
            0,
        ),
        one(
            "WITH t AS (SELECT * FROM spans) SELECT count(*) FROM t WHERE tenant <> 'acme-retail'",
            0,
        ),
        one(
            "SELECT count(*) FROM (SELECT tenant FROM spans UNION SELECT tenant FROM outcomes \
             UNION SELECT tenant FROM baselines WHERE tenant IS NOT NULL)",
            1,
        ),
        one(
            "SELECT count(*) FROM spans a JOIN spans b ON a.span_id = b.span_id",
            count,
        ),
        one(
            "SELECT max(n) FROM (SELECT count(*) OVER () AS n FROM spans)",
            count,
        ),
        one(
            "SELECT max(n) FROM (SELECT tenant, count(*) AS n FROM spans \
             GROUP BY GROUPING SETS ((tenant), ()))",
            count,
        ),
        one(
            "SELECT count(*) FROM spans WHERE tenant = 'umbrella-legal' OR tenant IS NULL",
            0,
        ),
        one(
            "SELECT count(*) FROM outcomes o JOIN spans s ON o.work_item_id = s.work_item_id \
             WHERE o.tenant <> s.tenant",
            0,
        ),
    ] {
        let got = run(&mut ana, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(single_i64(&got), expected, "{sql}");
    }
}

#[tokio::test]
async fn an_error_on_other_tenants_rows_is_no_oracle() {
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    let count = of_tenant(&table_rows(&sample(), "spans"), ANA_TENANT, false).num_rows() as i64;
    // Each predicate divides by zero on any row of another tenant. Were it evaluated before
    // the tenant filter, the error would tell that such rows exist.
    for sql in [
        "SELECT count(*) FROM spans WHERE tenant = 'acme-retail' OR \
         input_tokens / (input_tokens - input_tokens) > 0",
        "SELECT count(*) FROM spans WHERE CASE WHEN tenant <> 'acme-retail' \
         THEN input_tokens / (input_tokens - input_tokens) ELSE 1 END = 1",
        "SELECT count(*) FROM (SELECT * FROM spans LIMIT 100000) WHERE CASE WHEN tenant \
         <> 'acme-retail' THEN input_tokens / (input_tokens - input_tokens) ELSE 1 END = 1",
        "SELECT sum(CASE WHEN tenant = 'umbrella-legal' \
         THEN input_tokens / (input_tokens - input_tokens) ELSE 1 END) FROM spans",
    ] {
        let got = run(&mut ana, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(single_i64(&got), count, "{sql}");
    }
    // The same predicate on her own rows does fail: the test can tell the difference.
    let own = run(
        &mut ana,
        "SELECT count(*) FROM spans WHERE input_tokens / (input_tokens - input_tokens) > 0",
    )
    .await
    .unwrap_err();
    assert_eq!(own.code(), Code::InvalidArgument, "{own:?}");
}

#[tokio::test]
async fn explain_and_the_file_list_are_for_administrators() {
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    let mut admin = login(&server, "admin", "pw-admin").await;
    for sql in [
        "EXPLAIN SELECT count(*) FROM spans",
        "EXPLAIN ANALYZE SELECT count(*) FROM spans",
        "EXPLAIN VERBOSE SELECT * FROM outcomes",
        "SELECT * FROM tokenledger_files",
        "SELECT count(*) FROM tokenledger.public.tokenledger_files",
        "SELECT * FROM spans WHERE span_id IN (SELECT path FROM tokenledger_files)",
        "SELECT * FROM rejected_spans",
        "SELECT count(*) FROM spans WHERE span_id IN (SELECT span_id FROM rejected_spans)",
    ] {
        let refused = run(&mut ana, sql).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{sql}: {refused:?}");
        run(&mut admin, sql)
            .await
            .unwrap_or_else(|e| panic!("admin {sql}: {e:?}"));
    }
    // Catalog browsing lists the file table to the administrator only.
    let listed = |mut client: arrow_flight::sql::client::FlightSqlServiceClient<_>| async move {
        let command = CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        };
        let info = client.get_tables(command).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let stream: FlightRecordBatchStream = client.do_get(ticket).await.unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let names = b.column(2).as_string::<i32>();
                (0..names.len())
                    .map(|i| names.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<String>>()
    };
    let ana_tables = listed(ana).await;
    let admin_tables = listed(admin).await;
    assert!(
        ana_tables.contains(&"spans".to_string()) && ana_tables.contains(&"allocation".to_string())
    );
    assert!(
        !ana_tables.contains(&"tokenledger_files".to_string()),
        "{ana_tables:?}"
    );
    assert!(
        !ana_tables.contains(&"rejected_spans".to_string()),
        "{ana_tables:?}"
    );
    assert!(admin_tables.contains(&"tokenledger_files".to_string()));
    assert!(admin_tables.contains(&"rejected_spans".to_string()));
}

#[tokio::test]
async fn report_views_are_built_over_the_users_rows() {
    let dir = tempfile::tempdir().unwrap();
    tenant_copy(ANA_TENANT, dir.path());
    let only_ana = Setup::new(dir.path().to_path_buf()).start().await;
    let mut reference = crate::support::client(&only_ana).await;
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    for view in &VIEWS {
        let sql = format!("SELECT * FROM {}", view.name);
        let expected = rows(&run(&mut reference, &sql).await.unwrap());
        let got = rows(&run(&mut ana, &sql).await.unwrap());
        assert_eq!(got, expected, "view {}", view.name);
    }
    // Not vacuous: the views have rows, and the unrestricted server's differ.
    let mut admin = login(&server, "admin", "pw-admin").await;
    let everyone = rows(
        &run(&mut admin, "SELECT * FROM cost_per_outcome")
            .await
            .unwrap(),
    );
    let hers = rows(
        &run(&mut ana, "SELECT * FROM cost_per_outcome")
            .await
            .unwrap(),
    );
    assert!(!hers.is_empty() && everyone.len() > hers.len());
}

#[tokio::test]
async fn tickets_and_prepared_handles_run_with_the_replaying_users_rights() {
    let server = server().await;
    let mut admin = login(&server, "admin", "pw-admin").await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    let all = table_rows(&sample(), "spans");
    let ana_count = of_tenant(&all, ANA_TENANT, false).num_rows() as i64;

    // A statement ticket the administrator got, fetched by ana.
    let info = admin
        .execute("SELECT count(*) FROM spans".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream: FlightRecordBatchStream = ana.do_get(ticket.clone()).await.unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(single_i64(&batches), ana_count);
    let stream: FlightRecordBatchStream = admin.do_get(ticket).await.unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(single_i64(&batches), all.num_rows() as i64);

    // A prepared statement bound by the administrator to another tenant, run by ana.
    let mut prepared = admin
        .prepare("SELECT count(*) FROM spans WHERE tenant = ?".into(), None)
        .await
        .unwrap();
    let params = one_text_parameter(BO_TENANT);
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = ana.do_get(ticket).await.map_err(status);
    let batches: Vec<RecordBatch> = stream.unwrap().try_collect().await.unwrap();
    assert_eq!(single_i64(&batches), 0, "ana sees no umbrella-legal rows");
    // Ana's own prepared statement over her tenant.
    let mut hers = ana
        .prepare("SELECT count(*) FROM spans WHERE tenant = ?".into(), None)
        .await
        .unwrap();
    hers.set_parameters(one_text_parameter(ANA_TENANT)).unwrap();
    let info = hers.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream: FlightRecordBatchStream = ana.do_get(ticket).await.unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(single_i64(&batches), ana_count);
}

/// One row binding `$1` to `value`, as a client binds a `?` parameter.
fn one_text_parameter(value: &str) -> RecordBatch {
    let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "$1",
        arrow::datatypes::DataType::Utf8,
        true,
    )]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from(vec![value]))],
    )
    .unwrap()
}

#[tokio::test]
async fn two_users_with_different_tenants_see_disjoint_totals() {
    let server = server().await;
    let mut ana = login(&server, "ana", "pw-ana").await;
    let mut bo = login(&server, "bo", "pw-bo").await;
    let all = table_rows(&sample(), "spans");
    let tokens = |batch: &RecordBatch| -> i64 {
        arrow::compute::sum(
            batch
                .column_by_name("input_tokens")
                .unwrap()
                .as_primitive::<Int64Type>(),
        )
        .unwrap()
    };
    let ana_tokens = tokens(&of_tenant(&all, ANA_TENANT, false));
    let bo_tokens = tokens(&of_tenant(&all, BO_TENANT, false))
        + tokens(&of_tenant(&all, "hooli-devices", false));
    let sql = "SELECT sum(input_tokens) FROM spans";
    let (a, b) = tokio::join!(run(&mut ana, sql), run(&mut bo, sql));
    assert_eq!(single_i64(&a.unwrap()), ana_tokens);
    assert_eq!(single_i64(&b.unwrap()), bo_tokens);
    assert!(ana_tokens + bo_tokens < tokens(&all), "other tenants exist");
}

#[tokio::test]
async fn a_user_from_before_tenancy_sees_no_tenants_rows() {
    let server = Setup::new(sample())
        .user("old", "pw-old", Grant::Unstated)
        .start()
        .await;
    let mut old = login(&server, "old", "pw-old").await;
    assert_eq!(
        single_i64(&run(&mut old, "SELECT count(*) FROM spans").await.unwrap()),
        0
    );
    assert_eq!(
        single_i64(
            &run(&mut old, "SELECT count(*) FROM outcomes")
                .await
                .unwrap()
        ),
        0
    );
    let shared = table_rows(&sample(), "baselines").num_rows() as i64;
    let baselines = single_i64(
        &run(
            &mut old,
            "SELECT count(*) FROM baselines WHERE tenant IS NULL",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        baselines, shared,
        "baselines without a tenant apply to everyone"
    );
}
