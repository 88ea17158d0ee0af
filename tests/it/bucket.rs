//! A bucket pipelines write into, on the real S3 server: new files show up after the listing
//! lifetime, bad files are quarantined while good ones answer, and a vanished server is a clear
//! error that heals when the server is back. A long-lived session here stands in for `serve`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::compute::concat_batches;
use arrow::datatypes::Int64Type;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokenledger_engine::{Access, DataLocation, EngineError, SessionOptions, TraceSession};

use crate::peers::{S3Server, repo_root};

const LISTING_TTL: Duration = Duration::from_millis(300);
const COUNT: &str = "SELECT count(*) AS n, sum(input_tokens) AS tokens FROM spans";

/// (rows, input tokens) of the hand-made spans, from its CSV source (not through the engine).
fn handmade_spans_totals() -> (i64, i64) {
    let csv = std::fs::read_to_string(repo_root().join("testdata/handmade/csv/spans.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "input_tokens").unwrap();
    let mut totals = (0, 0);
    for line in lines.filter(|l| !l.is_empty()) {
        totals.0 += 1;
        let tokens = line.split(',').nth(column).unwrap();
        // An empty field is a step without tokens (a tool call, a decision).
        if !tokens.is_empty() {
            totals.1 += tokens.parse::<i64>().unwrap();
        }
    }
    totals
}

fn handmade(table: &str) -> Vec<u8> {
    std::fs::read(repo_root().join(format!("testdata/handmade/{table}/{table}.parquet"))).unwrap()
}

async fn put(store: &Arc<dyn ObjectStore>, key: &str, bytes: Vec<u8>) {
    store.put(&Path::from(key), bytes.into()).await.unwrap();
}

async fn count(session: &TraceSession) -> Result<(i64, i64), String> {
    let batches = async {
        let frame = session.plan_sql(COUNT, Access::ReadWrite).await?;
        Ok::<_, EngineError>(frame.collect().await?)
    }
    .await
    .map_err(|e| e.user_message())?;
    let column = |i: usize| batches[0].column(i).as_primitive::<Int64Type>().value(0);
    Ok((column(0), column(1)))
}

async fn open(location: &DataLocation, s3: &[(String, String)], strict: bool) -> TraceSession {
    let options = SessionOptions {
        s3: s3.to_vec(),
        listing_ttl: Some(LISTING_TTL),
        strict,
        ..SessionOptions::default()
    };
    TraceSession::open(location.clone(), &options)
        .await
        .unwrap()
}

/// Waits out the listing lifetime, so the next query lists the bucket again.
async fn next_listing() {
    tokio::time::sleep(LISTING_TTL * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_files_appear_bad_ones_are_quarantined_and_outages_heal() {
    let Some(mut server) = S3Server::start("pipeline") else {
        return;
    };
    let s3 = server.overrides();
    let location = DataLocation::parse("s3://pipeline/lake").unwrap();
    let store = location.open_store(&s3).unwrap();
    let (rows, tokens) = handmade_spans_totals();

    put(&store, "lake/spans/2026/01/a.parquet", handmade("spans")).await;
    let session = open(&location, &s3, false).await;
    assert_eq!(count(&session).await, Ok((rows, tokens)));

    // A new file is seen by the first query after the listing lifetime.
    put(&store, "lake/spans/2026/02/b.parquet", handmade("spans")).await;
    next_listing().await;
    assert_eq!(count(&session).await, Ok((2 * rows, 2 * tokens)));

    // What pipelines also drop: garbage, a cut-short upload, another table's file, and
    // in-progress objects that must not even be listed.
    let spans = handmade("spans");
    put(
        &store,
        "lake/spans/garbage.parquet",
        b"<html>503</html>".to_vec(),
    )
    .await;
    put(
        &store,
        "lake/spans/truncated.parquet",
        spans[..spans.len() / 2].to_vec(),
    )
    .await;
    put(
        &store,
        "lake/spans/wrong_table.parquet",
        handmade("outcomes"),
    )
    .await;
    put(&store, "lake/spans/_staging/c.parquet", spans.clone()).await;
    put(&store, "lake/spans/c.parquet.inprogress", spans.clone()).await;
    put(&store, "lake/spans/placeholder.parquet", Vec::new()).await;
    next_listing().await;
    assert_eq!(count(&session).await, Ok((2 * rows, 2 * tokens)));

    let files = session
        .plan_sql(
            "SELECT path, status, rows, error FROM tokenledger_files ORDER BY path",
            Access::ReadWrite,
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let files = concat_batches(&files[0].schema(), &files).unwrap();
    let text = |column: usize, row: usize| files.column(column).as_string::<i32>().value(row);
    let listed: Vec<(&str, &str)> = (0..files.num_rows())
        .map(|r| (text(0, r), text(1, r)))
        .collect();
    assert_eq!(
        listed,
        [
            ("s3://pipeline/lake/spans/2026/01/a.parquet", "ok"),
            ("s3://pipeline/lake/spans/2026/02/b.parquet", "ok"),
            ("s3://pipeline/lake/spans/garbage.parquet", "quarantined"),
            ("s3://pipeline/lake/spans/truncated.parquet", "quarantined"),
            (
                "s3://pipeline/lake/spans/wrong_table.parquet",
                "quarantined"
            ),
        ]
    );
    assert_eq!(files.column(2).as_primitive::<Int64Type>().value(0), rows);
    assert!(
        text(3, 2).contains("not readable as Parquet"),
        "{}",
        text(3, 2)
    );
    assert!(
        text(3, 4).contains("is required but missing"),
        "{}",
        text(3, 4)
    );

    // Strict mode refuses to answer around a bad file.
    let strict = open(&location, &s3, true).await;
    let refused = count(&strict).await.unwrap_err();
    assert!(refused.contains("s3://pipeline/lake/spans/"), "{refused}");

    // The server goes away: a clear error, in seconds, not a hang or a panic.
    server.stop();
    next_listing().await;
    let started = Instant::now();
    let outage = count(&session).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("error while the server is down: {outage}");
    assert!(!outage.contains("panic"), "{outage}");
    assert!(
        outage.contains("127.0.0.1") || outage.to_lowercase().contains("connect"),
        "the error should say the store could not be reached: {outage}"
    );

    // Back again: the same session answers, without a restart of its own.
    server.restart();
    next_listing().await;
    assert_eq!(count(&session).await, Ok((2 * rows, 2 * tokens)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reading_when_the_server_dies_fails_clearly_and_the_next_one_answers() {
    use futures::StreamExt;
    let Some(mut server) = S3Server::start("midquery") else {
        return;
    };
    let env = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = "s3://midquery/lake";
    crate::peers::ok(crate::peers::tokenledger(
        &["gen", "--out", data, "--work-items", "20000", "--seed", "3"],
        &env,
    ));
    let options = SessionOptions {
        s3: server.overrides(),
        listing_ttl: Some(LISTING_TTL),
        // One partition reads the files one after another, so most are still unread when the
        // server dies after the first batch.
        target_partitions: Some(1),
        ..SessionOptions::default()
    };
    let session = TraceSession::open(DataLocation::parse(data).unwrap(), &options)
        .await
        .unwrap();
    let before = count(&session).await.unwrap();

    let mut stream = session
        .plan_sql("SELECT span_id, input_tokens FROM spans", Access::ReadWrite)
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    server.stop();
    let started = Instant::now();
    let mut read = first.num_rows();
    let failure = loop {
        match tokio::time::timeout(Duration::from_secs(90), stream.next()).await {
            Err(_) => panic!("the query hung after the server died"),
            Ok(None) => {
                panic!("read all {read} rows although the server died after the first batch")
            }
            Ok(Some(Ok(batch))) => read += batch.num_rows(),
            Ok(Some(Err(e))) => break EngineError::from(e).user_message(),
        }
    };
    eprintln!("after {read} rows, {:?}: {failure}", started.elapsed());
    assert!(!failure.contains("panic"), "{failure}");
    assert!(
        failure.contains("127.0.0.1") || failure.to_lowercase().contains("connect"),
        "the error should say the store could not be reached: {failure}"
    );
    assert!(
        (read as i64) < before.0,
        "{read} of {} rows before failing",
        before.0
    );

    server.restart();
    next_listing().await;
    assert_eq!(count(&session).await, Ok(before));
}
