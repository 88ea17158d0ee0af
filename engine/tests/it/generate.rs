//! The trace generator: deterministic, and realistic in the ways the reports rely on.

use std::collections::BTreeMap;
use std::path::Path;

use tokenledger_engine::TraceSession;
use tokenledger_gen::{GenOptions, GenSummary};

use crate::support::{gen_into, open, pruning_metric, rows};

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn small(seed: u64) -> GenOptions {
    // Small files so the run is split into several segments per workflow.
    GenOptions {
        work_items: 3_000,
        seed,
        spans_per_file: 12_000,
        ..GenOptions::default()
    }
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let summary = gen_into(a.path(), &small(7)).await;
    assert_eq!(gen_into(b.path(), &small(7)).await, summary);
    gen_into(c.path(), &small(8)).await;
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa == fb, "same seed must give identical bytes");
    assert!(
        fa.iter().any(|(k, v)| fc.get(k) != Some(v)),
        "another seed must give other data"
    );
    assert_eq!(summary.work_items, 3_000);
    assert_eq!(summary.files, fa.len());
    assert!(
        fa.keys()
            .filter(|k| k.starts_with("spans/support_ticket/"))
            .count()
            > 1,
        "{:?}",
        fa.keys()
    );
}

/// Shared generated data set for the invariant tests.
async fn generated() -> (tempfile::TempDir, TraceSession, GenSummary) {
    let dir = tempfile::tempdir().unwrap();
    let summary = gen_into(dir.path(), &small(42)).await;
    let session = open(dir.path()).await;
    (dir, session, summary)
}

fn one(rows: Vec<Vec<String>>) -> String {
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0][0].clone()
}

#[tokio::test]
async fn counts_and_keys_are_consistent() {
    let (_dir, s, summary) = generated().await;
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM spans").await),
        summary.spans.to_string()
    );
    assert_eq!(one(rows(&s, "SELECT count(*) FROM outcomes").await), "3000");
    assert_eq!(
        one(rows(&s, "SELECT count(DISTINCT work_item_id) FROM outcomes").await),
        "3000"
    );
    // Every span belongs to a work item with an outcome, and every item has spans.
    assert_eq!(one(rows(&s, "SELECT count(*) FROM spans s LEFT ANTI JOIN outcomes o ON s.work_item_id = o.work_item_id").await), "0");
    assert_eq!(one(rows(&s, "SELECT count(*) FROM outcomes o LEFT ANTI JOIN spans s ON s.work_item_id = o.work_item_id").await), "0");
    // One root per trace, and every other span's parent is in the same trace.
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM (SELECT trace_id FROM spans GROUP BY trace_id HAVING sum(CASE WHEN parent_span_id IS NULL THEN 1 ELSE 0 END) <> 1)").await),
        "0"
    );
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM spans c LEFT ANTI JOIN spans p ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id WHERE c.parent_span_id IS NOT NULL").await),
        "0"
    );
    // Attempts are numbered 1..n without gaps, and a resolved item's last attempt is the one that resolved it.
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM (SELECT work_item_id, max(attempt) m, count(DISTINCT attempt) c FROM spans GROUP BY 1) WHERE m <> c").await),
        "0"
    );
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM outcomes o JOIN (SELECT work_item_id, max(attempt) m FROM spans GROUP BY 1) a USING (work_item_id) WHERE o.outcome = 'resolved' AND o.resolved_attempt <> a.m").await),
        "0"
    );
}

#[tokio::test]
async fn token_counts_and_costs_are_coherent() {
    let (_dir, s, _) = generated().await;
    assert_eq!(
        one(rows(&s, "SELECT count(*) FROM spans WHERE cached_input_tokens > input_tokens OR reasoning_tokens > output_tokens OR input_tokens < 0").await),
        "0"
    );
    // Reported costs equal tokens × the price valid at the call (worked here in plain SQL).
    let worst = one(rows(&s, "
        SELECT max(abs(s.cost_usd - ((s.input_tokens - s.cached_input_tokens) * p.input_usd_per_mtok
                  + s.cached_input_tokens * coalesce(p.cached_input_usd_per_mtok, p.input_usd_per_mtok)
                  + (s.output_tokens - s.reasoning_tokens) * p.output_usd_per_mtok
                  + s.reasoning_tokens * coalesce(p.reasoning_usd_per_mtok, p.output_usd_per_mtok)) / 1e6))
        FROM spans s
        JOIN (SELECT *, lead(valid_from) OVER (PARTITION BY model ORDER BY valid_from) AS valid_until FROM model_prices) p
          ON s.model = p.model AND p.valid_from <= s.start_time AND (p.valid_until IS NULL OR s.start_time < p.valid_until)
        WHERE s.cost_usd IS NOT NULL").await);
    assert!(worst.parse::<f64>().unwrap() < 1e-12, "cost off by {worst}");
    // Some calls leave cost to be priced later; the price cut falls inside the period.
    let unpriced: f64 = one(rows(&s, "SELECT avg(CASE WHEN cost_usd IS NULL THEN 1.0 ELSE 0.0 END) FROM spans WHERE kind = 'llm'").await).parse().unwrap();
    assert!((0.1..0.3).contains(&unpriced), "{unpriced}");
    assert_eq!(
        rows(&s, "SELECT count(DISTINCT p.valid_from) FROM spans s JOIN model_prices p ON s.model = p.model WHERE s.model = 'gpt-4.1-mini' AND p.valid_from <= s.start_time").await,
        vec![vec!["2"]]
    );
}

#[tokio::test]
async fn the_economics_look_like_real_agents() {
    let (_dir, s, _) = generated().await;
    // Four workflows with distinct BPO prices.
    assert_eq!(
        one(rows(
            &s,
            "SELECT count(DISTINCT bpo_unit_price_usd) FROM baselines"
        )
        .await),
        "4"
    );
    assert_eq!(
        one(rows(&s, "SELECT count(DISTINCT workflow) FROM spans").await),
        "4"
    );
    // Bigger models succeed more often on the first try (within one workflow: across workflows the
    // big model gets the hardest work, so its overall rate is not comparable).
    let rates = rows(&s, "
        SELECT l.model, avg(CASE WHEN r.status = 'ok' THEN 1.0 ELSE 0.0 END)
        FROM spans r JOIN (SELECT DISTINCT trace_id, model FROM spans WHERE kind = 'llm') l ON r.trace_id = l.trace_id
        WHERE r.parent_span_id IS NULL AND r.attempt = 1 AND r.workflow = 'insurance_claim'
        GROUP BY l.model ORDER BY 2").await;
    let order: Vec<&str> = rates.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        order,
        ["gpt-4.1-mini", "claude-sonnet-4-5", "claude-opus-4-1"],
        "{rates:?}"
    );
    // Retries exist and form a tail.
    let attempts = rows(&s, "SELECT m, count(*) FROM (SELECT work_item_id, max(attempt) m FROM spans GROUP BY 1) GROUP BY m ORDER BY m").await;
    assert!(attempts.len() >= 3, "{attempts:?}");
    let counts: Vec<u64> = attempts.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] > w[1]),
        "each further attempt is rarer: {attempts:?}"
    );
    // Context grows turn by turn within a trace.
    assert_eq!(
        one(rows(&s, "
            SELECT count(*) FROM (
              SELECT input_tokens, lag(input_tokens) OVER (PARTITION BY trace_id ORDER BY start_time) AS prev
              FROM spans WHERE kind = 'llm') WHERE prev IS NOT NULL AND input_tokens <= prev").await),
        "0"
    );
    // Retrieval over-fetches; humans step in sometimes; all four outcomes occur.
    let fetch = rows(&s, "SELECT sum(docs_retrieved) > 2 * sum(docs_used), bool_and(docs_used <= docs_retrieved) FROM spans WHERE kind = 'retrieval'").await;
    assert_eq!(fetch, vec![vec!["true", "true"]]);
    assert!(
        one(rows(&s, "SELECT count(*) FROM spans WHERE kind = 'human'").await)
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(
        one(rows(&s, "SELECT count(DISTINCT outcome) FROM outcomes").await),
        "4"
    );
}

#[tokio::test]
async fn spans_are_sorted_by_start_time_within_each_file() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    gen_into(dir.path(), &small(3)).await;
    let mut checked = 0;
    for (name, bytes) in files(dir.path())
        .into_iter()
        .filter(|(k, _)| k.starts_with("spans/"))
    {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let mut previous = i64::MIN;
        for batch in reader {
            let batch = batch.unwrap();
            let times = batch
                .column_by_name("start_time")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .unwrap();
            for t in times.values() {
                assert!(*t >= previous, "{name}: start_time goes back");
                previous = *t;
            }
        }
        checked += 1;
    }
    assert!(checked >= 4);
}

#[tokio::test]
async fn time_filters_prune_files_by_statistics() {
    let dir = tempfile::tempdir().unwrap();
    // About twelve files per workflow, each covering one week.
    gen_into(
        dir.path(),
        &GenOptions {
            spans_per_file: 2_000,
            ..small(5)
        },
    )
    .await;
    let s = open(dir.path()).await;
    let plan = rows(&s, "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE start_time < TIMESTAMP '2026-01-06T00:00:00Z'").await;
    let (total, matched) = pruning_metric(&plan, "files_ranges_pruned_statistics");
    let metric = format!("{matched} of {total} file ranges");
    assert!(total > 20, "{metric}");
    // Only each workflow's first week can hold rows from before Jan 6.
    assert!(matched <= 4, "{metric}");
    // And the count is right: compare with a scan that cannot prune.
    let pruned = rows(
        &s,
        "SELECT count(*) FROM spans WHERE start_time < TIMESTAMP '2026-01-06T00:00:00Z'",
    )
    .await;
    let full = rows(&s, "SELECT sum(CASE WHEN start_time < TIMESTAMP '2026-01-06T00:00:00Z' THEN 1 ELSE 0 END) FROM spans").await;
    assert_eq!(pruned, full);
}
