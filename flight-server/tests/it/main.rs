//! The Flight SQL server through arrow-flight's own Rust client: every command a BI tool uses,
//! with and without users, and the refusals a read-only server owes; tenant isolation
//! ([`tenancy`]) and resource limits ([`limits`]).

mod limits;
mod support;
mod tenancy;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo};
use arrow_flight::{FlightInfo, decode::FlightRecordBatchStream};
use futures::TryStreamExt;
use tokenledger_flight_server::Grant;
use tonic::transport::Channel;

use crate::support::{Setup, TestServer, client};

fn handmade() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/handmade")
}

async fn start(with_users: bool) -> TestServer {
    let mut setup = Setup::new(handmade());
    if with_users {
        setup = setup.user(
            "analyst",
            "correct horse",
            Grant::from_tenants(&["*".into()]).unwrap(),
        );
    }
    setup.start().await
}

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> (Arc<Schema>, Vec<RecordBatch>) {
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream: FlightRecordBatchStream = client.do_get(ticket).await.unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let schema = Arc::new(info.try_decode_schema().unwrap());
    for batch in &batches {
        assert_eq!(
            batch.schema(),
            schema,
            "DoGet schema must equal the FlightInfo schema"
        );
    }
    (schema, batches)
}

fn column_strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(column).as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn statements_stream_the_right_rows_as_plain_utf8() {
    let server = start(false).await;
    let mut client = client(&server).await;
    let info = client
        .execute("SELECT workflow, count(*) AS items, sum(value_usd) AS value FROM outcomes GROUP BY workflow ORDER BY workflow".into(), None)
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    assert_eq!(column_strings(&batches, 0), ["invoice", "support_ticket"]);
    let items: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(items, [5, 7]);
}

#[tokio::test]
async fn nulls_booleans_long_text_and_nested_results_reach_the_client_whole() {
    // Flat results are written by the server's own IPC writer, nested ones by arrow-flight's:
    // both must decode to the FlightInfo schema and the values worked out by hand.
    let server = start(false).await;
    let mut client = client(&server).await;
    let flat = "SELECT workflow, workflow = 'invoice' AS is_invoice, \
                CASE WHEN workflow = 'invoice' THEN NULL \
                ELSE workflow || ' with a name longer than twelve bytes' END AS long_name \
                FROM outcomes GROUP BY workflow ORDER BY workflow";
    let info = client.execute(flat.into(), None).await.unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
    assert_eq!(
        crate::support::rows(&batches),
        [
            "invoice|true|NULL",
            "support_ticket|false|support_ticket with a name longer than twelve bytes"
        ]
    );
    let nested = "SELECT make_array(1, 2, 3) AS numbers, 'x' AS letter";
    let info = client.execute(nested.into(), None).await.unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert!(matches!(schema.field(0).data_type(), DataType::List(_)));
    assert_eq!(crate::support::rows(&batches), ["[1, 2, 3]|x"]);
}

#[tokio::test]
async fn prepared_statements_bind_jdbc_placeholders() {
    let server = start(false).await;
    let mut client = client(&server).await;
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM spans WHERE attempt >= ? AND workflow = ?".into(),
            None,
        )
        .await
        .unwrap();
    let dataset = prepared.dataset_schema().unwrap();
    assert_eq!(
        dataset.field(0).name(),
        "n",
        "a SELECT returns its result schema at prepare time"
    );
    let parameters = prepared.parameter_schema().unwrap();
    assert_eq!(parameters.fields().len(), 2);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(arrow::array::StringArray::from(vec!["support_ticket"])),
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    // Support spans of attempts 2 and 3 (HAND_CALC.md): T3#2 3 spans, T5#2 3, T5#3 3, T6#2 4 (with the human review).
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        13
    );
    prepared.close().await.unwrap();
}

#[tokio::test]
async fn metadata_lists_tables_views_functions_and_types() {
    let server = start(false).await;
    let mut client = client(&server).await;

    let (_, catalogs) = {
        let info = client.get_catalogs().await.unwrap();
        fetch(&mut client, info).await
    };
    assert!(column_strings(&catalogs, 0).contains(&"tokenledger".to_string()));

    let schemas = CommandGetDbSchemas {
        catalog: Some("tokenledger".into()),
        db_schema_filter_pattern: Some("pub%".into()),
    };
    let (_, schemas) = {
        let info = client.get_db_schemas(schemas).await.unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(column_strings(&schemas, 1), ["public"]);

    let tables = CommandGetTables {
        catalog: Some("tokenledger".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("%".into()),
        table_types: vec![],
        include_schema: true,
    };
    let (_, tables) = {
        let info = client.get_tables(tables).await.unwrap();
        fetch(&mut client, info).await
    };
    let names = column_strings(&tables, 2);
    let types = column_strings(&tables, 3);
    let kind = |name: &str| types[names.iter().position(|n| n == name).unwrap()].clone();
    assert_eq!(kind("spans"), "TABLE");
    assert_eq!(kind("cost_per_outcome"), "VIEW");
    let table_types: Vec<String> = {
        let (_, t) = {
            let info = client.get_table_types().await.unwrap();
            fetch(&mut client, info).await
        };
        column_strings(&t, 0)
    };
    assert!(
        table_types.contains(&"TABLE".to_string()) && table_types.contains(&"VIEW".to_string())
    );
    assert!(!table_types.contains(&"BASE TABLE".to_string()));

    let (_, info) = {
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerReadOnly,
            ])
            .await
            .unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(info[0].num_rows(), 2);

    let (_, xdbc) = {
        let info = client
            .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
            .await
            .unwrap();
        fetch(&mut client, info).await
    };
    assert!(column_strings(&xdbc, 0).contains(&"VARCHAR".to_string()));

    // Functions are visible through information_schema.
    let info = client
        .execute(
            "SELECT count(*) FROM information_schema.routines WHERE routine_name = 'token_cost'"
                .into(),
            None,
        )
        .await
        .unwrap();
    let (_, rows) = fetch(&mut client, info).await;
    assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test]
async fn errors_map_to_grpc_codes_and_writes_are_refused() {
    let server = start(false).await;
    let mut client = client(&server).await;
    let code = |r: Result<FlightInfo, arrow_flight::error::FlightError>| match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:?}"),
    };
    let bad_sql = code(client.execute("SELEKT 1".into(), None).await);
    assert!(
        bad_sql.contains("InvalidArgument") && bad_sql.contains("ParserError"),
        "{bad_sql}"
    );
    let unknown = code(client.execute("SELECT * FROM nope".into(), None).await);
    assert!(unknown.contains("NotFound"), "{unknown}");
    for write in [
        "CREATE TABLE x AS SELECT 1",
        "COPY spans TO '/tmp/x.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "DROP VIEW allocation",
    ] {
        let refused = code(client.execute(write.into(), None).await);
        assert!(refused.contains("PermissionDenied"), "{write}: {refused}");
    }
    // The server still answers.
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    fetch(&mut client, info).await;
}

#[tokio::test]
async fn users_must_authenticate() {
    let server = start(true).await;
    let mut anonymous = client(&server).await;
    let refused = format!(
        "{:?}",
        anonymous
            .execute("SELECT 1".into(), None)
            .await
            .unwrap_err()
    );
    assert!(
        refused.contains("Unauthenticated") || refused.contains("valid authentication credentials"),
        "{refused}"
    );

    let mut wrong = client(&server).await;
    let refused = format!(
        "{:?}",
        wrong.handshake("analyst", "wrong").await.unwrap_err()
    );
    assert!(
        refused.contains("Unauthenticated") || refused.contains("valid authentication credentials"),
        "{refused}"
    );

    let mut analyst = client(&server).await;
    analyst.handshake("analyst", "correct horse").await.unwrap();
    let info = analyst
        .execute("SELECT count(*) FROM spans".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut analyst, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        60
    );
}

#[tokio::test]
async fn a_large_result_streams_and_a_dropped_stream_does_not_hurt_the_server() {
    let server = start(false).await;
    let mut client = client(&server).await;
    let info = client
        .execute("SELECT value FROM range(5000000)".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(
        first.num_rows() > 0 && first.num_rows() < 5_000_000,
        "results arrive in batches"
    );
    drop(stream);
    let info = client.execute("SELECT 42".into(), None).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        42
    );
}
