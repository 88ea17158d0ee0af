//! Resource limits through arrow-flight's Flight SQL client: memory caps, spilling, deadlines
//! and a crowd of clients. Expected answers come from the Parquet files (see [`crate::tenancy`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use tokenledger_engine::MemoryLimits;
use tokenledger_flight_server::QueryLimits;
use tonic::Code;

use crate::support::{Setup, client, run};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/sample")
}

const MIB: usize = 1024 * 1024;

fn memory(pool: usize, query: usize, spill: &std::path::Path) -> MemoryLimits {
    MemoryLimits {
        pool_bytes: pool,
        query_bytes: query,
        spill_dir: Some(spill.to_path_buf()),
        spill_bytes: 1 << 30,
    }
}

fn spans() -> RecordBatch {
    crate::tenancy::all_spans()
}

#[tokio::test]
async fn a_join_over_its_cap_fails_while_a_small_query_succeeds() {
    let spill = tempfile::tempdir().unwrap();
    let server = Setup::new(sample())
        .memory(memory(64 * MIB, 4 * MIB, spill.path()))
        .start()
        .await;
    let mut big = client(&server).await;
    let mut small = client(&server).await;
    // The build side of this join holds every span's text columns: far over 4 MiB.
    let join = "SELECT count(*) FROM spans a JOIN spans b ON a.span_id = b.span_id \
                AND a.name = b.name AND a.trace_id = b.trace_id AND a.model = b.model";
    let (refused, answered) = tokio::join!(
        run(&mut big, join),
        run(&mut small, "SELECT count(*) FROM spans WHERE attempt > 1")
    );
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--query-memory-limit"),
        "{refused:?}"
    );
    let retries = spans()
        .column_by_name("attempt")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>()
        .iter()
        .filter(|a| a.is_some_and(|a| a > 1))
        .count() as i64;
    let answered = answered.unwrap();
    assert_eq!(
        answered[0].column(0).as_primitive::<Int64Type>().value(0),
        retries
    );
    // The refused query gave its memory back: the same server answers a query that needs it.
    let after = run(&mut big, "SELECT count(DISTINCT span_id) FROM spans")
        .await
        .unwrap();
    assert_eq!(
        after[0].column(0).as_primitive::<Int64Type>().value(0),
        spans().num_rows() as i64
    );
}

#[tokio::test]
async fn a_sort_over_a_small_cap_spills_and_gets_the_right_order() {
    let spill = tempfile::tempdir().unwrap();
    let server = Setup::new(sample())
        .memory(memory(256 * MIB, 16 * MIB, spill.path()))
        .setting(
            "datafusion.execution.sort_spill_reservation_bytes",
            "2097152",
        )
        // One sort, no merge of sorted partitions after it: that merge cannot spill, and
        // under a cap this small it finds the memory held by the sorts' output.
        .setting("datafusion.execution.target_partitions", "1")
        .start()
        .await;
    let mut analyst = client(&server).await;
    // Each partition's sort keeps 2 MiB of the 16 MiB cap for merging what it spilled
    // (sort_spill_reservation_bytes; 10 MiB by default): the rest is too little for these
    // columns of every span.
    let sql = "SELECT span_id, input_tokens, trace_id, work_item_id FROM spans \
               ORDER BY input_tokens DESC NULLS LAST, span_id";
    let batches = run(&mut analyst, sql).await.unwrap();
    let got: Vec<(String, Option<i64>)> = batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_string::<i32>();
            let tokens = b.column(1).as_primitive::<Int64Type>();
            (0..b.num_rows())
                .map(|i| {
                    (
                        ids.value(i).to_string(),
                        tokens.is_valid(i).then(|| tokens.value(i)),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let all = spans();
    let ids = all.column_by_name("span_id").unwrap().as_string::<i32>();
    let tokens = all
        .column_by_name("input_tokens")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut expected: Vec<(String, Option<i64>)> = (0..all.num_rows())
        .map(|i| {
            (
                ids.value(i).to_string(),
                tokens.is_valid(i).then(|| tokens.value(i)),
            )
        })
        .collect();
    // Descending with NULLs last: Option orders None first, so reverse on the tokens.
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    assert!(
        got == expected,
        "the sorted spans differ from the files' ({} rows)",
        got.len()
    );
    // It did spill: the same sort under EXPLAIN ANALYZE reports spilled bytes.
    let explained = run(&mut analyst, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap();
    let plan = crate::support::rows(&explained).join("\n");
    let spilled = plan
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>();
    assert!(spilled > 0, "no spill under a 16 MiB cap:\n{plan}");
}

#[tokio::test]
async fn a_query_past_its_deadline_is_stopped_with_deadline_exceeded() {
    let server = Setup::new(sample())
        .limits(QueryLimits {
            timeout: Duration::from_secs(2),
            ..QueryLimits::default()
        })
        .start()
        .await;
    let mut analyst = client(&server).await;
    let started = Instant::now();
    let stopped = run(
        &mut analyst,
        "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 3",
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(stopped.code(), Code::DeadlineExceeded, "{stopped:?}");
    assert!(stopped.message().contains("--query-timeout"), "{stopped:?}");
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}, deadline 2 s"
    );
    // Its turn was given back.
    let after = run(&mut analyst, "SELECT count(*) FROM outcomes")
        .await
        .unwrap();
    assert_eq!(after[0].num_rows(), 1);
}

#[tokio::test]
async fn sixty_four_clients_get_the_right_answer_or_a_clean_busy_error() {
    let server = Setup::new(sample())
        .limits(QueryLimits {
            max_running: 2,
            max_running_per_user: 2,
            max_queued: 8,
            timeout: Duration::from_secs(120),
        })
        .start()
        .await;
    let expected = crate::tenancy::tokens_by_workflow();
    let sql = "SELECT workflow, sum(input_tokens) FROM spans GROUP BY workflow";
    // Connected first, then all asking at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut analyst = client(&server).await;
        let start = std::sync::Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            run(&mut analyst, sql).await
        }));
    }
    let (mut answered, mut busy) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(batches) => {
                assert_eq!(crate::support::rows(&batches), expected);
                answered += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("server busy"), "{e:?}");
                busy += 1;
            }
        }
    }
    assert!(
        answered >= 10,
        "2 running + 8 waiting are answered at least: {answered}"
    );
    assert!(
        busy > 0,
        "64 at once past a queue of 8: some are told the server is busy"
    );
    // The server is still up, with every slot free again.
    let mut analyst = client(&server).await;
    for _ in 0..3 {
        assert_eq!(
            crate::support::rows(&run(&mut analyst, sql).await.unwrap()),
            expected
        );
    }
}
