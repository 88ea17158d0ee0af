//! The token-economics functions inside real sessions: agreement with DataFusion's own
//! regr_slope, and the same answers however the input is partitioned.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};
use tokenledger_gen::{GenOptions, Rng};

use crate::support::{open, rows};

/// 200 groups of noisy linear data over several partitions, with a few NULLs.
fn random_points() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("cost", DataType::Float64, true),
        Field::new("value", DataType::Float64, true),
    ]));
    let mut rng = Rng::new(2026, 1);
    let partitions = (0..4)
        .map(|_| {
            let n = 50_000;
            let g: Vec<i64> = (0..n).map(|_| rng.int(0, 199)).collect();
            let cost: Vec<Option<f64>> = (0..n)
                .map(|_| (!rng.chance(0.01)).then(|| rng.lognormal(0.05, 1.0)))
                .collect();
            let value: Vec<Option<f64>> = g
                .iter()
                .zip(&cost)
                .map(|(&g, c)| {
                    (!rng.chance(0.01)).then(|| (g as f64) * c.unwrap_or(0.0) + rng.normal() * 3.0)
                })
                .collect();
            vec![
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from(g)),
                        Arc::new(Float64Array::from(cost)),
                        Arc::new(Float64Array::from(value)),
                    ],
                )
                .unwrap(),
            ]
        })
        .collect();
    MemTable::try_new(schema, partitions).unwrap()
}

#[tokio::test]
async fn marginal_token_utility_agrees_with_regr_slope() {
    let session = open(&crate::support::repo_root().join("testdata/handmade")).await;
    session
        .register_table("points", Arc::new(random_points()))
        .unwrap();
    let result = rows(
        &session,
        "SELECT g, marginal_token_utility(value, cost), regr_slope(value, cost) FROM points GROUP BY g ORDER BY g",
    )
    .await;
    assert_eq!(result.len(), 200);
    for row in &result {
        let (ours, theirs): (f64, f64) = (row[1].parse().unwrap(), row[2].parse().unwrap());
        assert!(
            (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1e-12),
            "group {}: {ours} vs {theirs}",
            row[0]
        );
    }
    // Without GROUP BY (the single-group accumulator) too.
    let whole = rows(
        &session,
        "SELECT marginal_token_utility(value, cost), regr_slope(value, cost) FROM points",
    )
    .await;
    let (ours, theirs): (f64, f64) = (whole[0][0].parse().unwrap(), whole[0][1].parse().unwrap());
    assert!(
        (ours - theirs).abs() <= 1e-9 * theirs.abs(),
        "{ours} vs {theirs}"
    );
}

const BY_WORKFLOW: &str = "
    SELECT o.workflow,
           cost_per_outcome(s.spend, o.outcome = 'resolved') AS cpo,
           sum(s.spend) / sum(CASE WHEN o.outcome = 'resolved' THEN 1 ELSE 0 END) AS cpo_by_hand,
           marginal_token_utility(o.value_usd, s.spend) AS mtu,
           regr_slope(o.value_usd, s.spend) AS slope
    FROM outcomes o
    JOIN (SELECT work_item_id,
                 sum(coalesce(cost_usd, token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time))) AS spend
          FROM spans GROUP BY work_item_id) s USING (work_item_id)
    GROUP BY o.workflow ORDER BY o.workflow";

#[tokio::test]
async fn aggregates_give_the_same_answer_on_one_partition_and_eight() {
    let dir = tempfile::tempdir().unwrap();
    let location = DataLocation::parse(dir.path().to_str().unwrap()).unwrap();
    let options = GenOptions {
        work_items: 4_000,
        spans_per_file: 5_000,
        ..GenOptions::default()
    };
    crate::support::gen_into(dir.path(), &options).await;

    let mut results = Vec::new();
    for partitions in [1, 8] {
        let options = SessionOptions {
            target_partitions: Some(partitions),
            ..SessionOptions::default()
        };
        let session = TraceSession::open(location.clone(), &options)
            .await
            .unwrap();
        results.push(rows(&session, BY_WORKFLOW).await);
    }
    let close = |a: &str, b: &str| {
        let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
        (a - b).abs() <= 1e-9 * b.abs()
    };
    assert_eq!(results[0].len(), 4);
    for (one, eight) in results[0].iter().zip(&results[1]) {
        assert_eq!(one[0], eight[0]);
        for row in [one, eight] {
            assert!(
                close(&row[1], &row[2]),
                "cost_per_outcome vs plain SQL: {row:?}"
            );
            assert!(
                close(&row[3], &row[4]),
                "marginal_token_utility vs regr_slope: {row:?}"
            );
        }
        assert!(
            close(&one[1], &eight[1]) && close(&one[3], &eight[3]),
            "{one:?} vs {eight:?}"
        );
    }
}

#[tokio::test]
async fn token_cost_reprices_generated_calls_exactly() {
    // The generator priced reported calls with its own price table; token_cost must agree on every one.
    let dir = tempfile::tempdir().unwrap();
    let options = GenOptions {
        work_items: 2_000,
        ..GenOptions::default()
    };
    crate::support::gen_into(dir.path(), &options).await;
    let session = open(dir.path()).await;
    let result = rows(
        &session,
        "SELECT count(*), max(abs(token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time) - cost_usd))
         FROM spans WHERE cost_usd IS NOT NULL",
    )
    .await;
    assert!(result[0][0].parse::<u64>().unwrap() > 5_000, "{result:?}");
    assert!(result[0][1].parse::<f64>().unwrap() < 1e-15, "{result:?}");
}

#[tokio::test]
async fn a_broken_prices_file_is_quarantined_or_with_strict_fails_only_token_cost() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("model_prices")).unwrap();
    std::fs::write(
        dir.path().join("model_prices/broken.parquet"),
        b"not parquet",
    )
    .unwrap();
    let token_cost = "SELECT token_cost('m', 1, 0, 1, 0, now())";

    // Quarantined: no prices, so no price for the model, and the file is listed as bad.
    let session = open(dir.path()).await;
    assert_eq!(rows(&session, token_cost).await, vec![vec!["NULL"]]);
    assert_eq!(
        rows(&session, "SELECT table_name, status FROM tokenledger_files").await,
        vec![vec!["model_prices", "quarantined"]]
    );

    // Strict: token_cost says why it cannot price anything; other queries still run.
    let strict = tokenledger_engine::SessionOptions {
        strict: true,
        ..Default::default()
    };
    let location = tokenledger_engine::DataLocation::parse(dir.path().to_str().unwrap()).unwrap();
    let session = tokenledger_engine::TraceSession::open(location, &strict)
        .await
        .unwrap();
    assert_eq!(
        rows(&session, "SELECT effective_cost(1, 0.5)").await,
        vec![vec!["2.0"]]
    );
    let error = async {
        let frame = session.plan_sql(token_cost, Access::ReadWrite).await?;
        Ok::<_, tokenledger_engine::EngineError>(frame.collect().await?)
    }
    .await
    .unwrap_err();
    let message = error.user_message();
    assert!(
        message.contains("token_cost: model prices are unavailable")
            && message.contains("broken.parquet"),
        "{message}"
    );
}

#[tokio::test]
async fn a_long_running_session_prices_with_price_files_added_later() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("model_prices")).unwrap();
    let location = DataLocation::parse(dir.path().to_str().unwrap()).unwrap();
    // Long enough that the steps before the first refresh fit inside it, even in a debug build.
    let ttl = std::time::Duration::from_secs(2);
    let options = SessionOptions {
        listing_ttl: Some(ttl),
        ..SessionOptions::default()
    };
    let session = TraceSession::open(location.clone(), &options)
        .await
        .unwrap();
    // One million input tokens and a quarter million output tokens, in February.
    let cost = "SELECT token_cost('m', 1000000, 0, 250000, 0, TIMESTAMP '2026-02-01T00:00:00Z')";
    assert_eq!(rows(&session, cost).await, vec![vec!["NULL"]]);
    // A view planned now, before the prices exist: nothing may fold its call with today's prices.
    session
        .plan_sql(&format!("CREATE VIEW probe AS {cost}"), Access::ReadWrite)
        .await
        .unwrap();

    let csv = dir.path().join("prices.csv");
    std::fs::write(
        &csv,
        "model,valid_from,input_usd_per_mtok,output_usd_per_mtok\nm,2026-01-01T00:00:00Z,2.0,8.0\n",
    )
    .unwrap();
    let store = location.open_store(&[]).unwrap();
    let table = &tokenledger_engine::schema::MODEL_PRICES;
    tokenledger_engine::import::import_csv(store, &location, table, &csv)
        .await
        .unwrap();
    // Within the lifetime the session keeps its prices; after it, the new file prices calls:
    // 1 M × $2 + 0.25 M × $8 per million tokens = $4.
    session.refresh_prices().await;
    assert_eq!(rows(&session, cost).await, vec![vec!["NULL"]]);
    tokio::time::sleep(ttl + std::time::Duration::from_millis(300)).await;
    session.refresh_prices().await;
    assert_eq!(rows(&session, cost).await, vec![vec!["4.0"]]);
    assert_eq!(
        rows(&session, "SELECT * FROM probe").await,
        vec![vec!["4.0"]]
    );
}
