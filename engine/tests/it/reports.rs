//! The reports on generated data: invariants that must hold whatever the numbers.

use tokenledger_engine::TraceSession;
use tokenledger_gen::GenOptions;

use crate::support::{open, rows};

async fn generated() -> (tempfile::TempDir, TraceSession) {
    let dir = tempfile::tempdir().unwrap();
    let options = GenOptions {
        work_items: 4_000,
        seed: 17,
        spans_per_file: 10_000,
        ..GenOptions::default()
    };
    crate::support::gen_into(dir.path(), &options).await;
    let session = open(dir.path()).await;
    (dir, session)
}

fn none(rows: Vec<Vec<String>>) {
    assert!(rows.is_empty(), "rows break the invariant: {rows:?}");
}

#[tokio::test]
async fn report_invariants_hold_on_generated_data() {
    let (_dir, s) = generated().await;

    // cost_per_outcome: p in [0, 1]; a resolved item costs at least the average spend per item;
    // tenant rows add up to their workflow's row.
    none(rows(&s, "SELECT * FROM cost_per_outcome WHERE first_try_rate < 0 OR first_try_rate > 1 OR retry_share < 0 OR retry_share > 1").await);
    none(rows(&s, "SELECT * FROM cost_per_outcome WHERE cost_per_resolved_usd < spend_usd / work_items OR ai_cost_per_resolved_usd < spend_usd / work_items").await);
    none(rows(&s, "
        SELECT t.workflow FROM cost_per_outcome t JOIN cost_per_outcome w ON t.workflow = w.workflow AND w.tenant IS NULL
        WHERE t.tenant IS NOT NULL GROUP BY t.workflow, w.work_items, w.spend_usd
        HAVING sum(t.work_items) <> w.work_items OR abs(sum(t.spend_usd) - w.spend_usd) > 1e-9 * w.spend_usd").await);
    assert_eq!(
        rows(
            &s,
            "SELECT count(*) FROM cost_per_outcome WHERE tenant IS NULL"
        )
        .await,
        vec![vec!["4"]]
    );
    assert_eq!(
        rows(
            &s,
            "SELECT sum(work_items) FROM cost_per_outcome WHERE tenant IS NULL"
        )
        .await,
        vec![vec!["4000"]]
    );

    // retry_tail: shares sum to 1, item counts to the items, percentiles ordered.
    none(rows(&s, "
        SELECT * FROM retry_tail
        WHERE abs(spend_share_attempt_1 + spend_share_attempt_2 + spend_share_attempt_3 + spend_share_attempt_4plus - 1) > 1e-9
           OR items_1_attempt + items_2_attempts + items_3_attempts + items_4plus_attempts <> work_items
           OR NOT (p50_item_cost_usd <= p90_item_cost_usd AND p90_item_cost_usd <= p99_item_cost_usd)
           OR top_1pct_spend_share <= 0 OR top_1pct_spend_share > 1").await);

    // context_growth: contexts grow within attempts, long contexts cost more attention than the median.
    none(rows(&s, "SELECT * FROM context_growth WHERE avg_growth_per_turn <= 0 OR avg_attention_vs_median < 1 OR overfetch_share <= 0 OR overfetch_share >= 1").await);

    // routing_candidates: a candidate is cheaper and saves money.
    none(rows(&s, "SELECT * FROM routing_candidates WHERE cheaper_model IS NOT NULL AND (cheaper_cost_per_attempt_usd >= cost_per_attempt_usd OR saving_usd <= 0)").await);
    none(
        rows(
            &s,
            "SELECT * FROM routing_candidates WHERE success_rate < 0 OR success_rate > 1",
        )
        .await,
    );

    // bpo_comparison: the verdict follows from the numbers.
    none(
        rows(
            &s,
            "
        SELECT * FROM bpo_comparison
        WHERE (verdict = 'AI cheaper') <> (ai_cost_per_unit_usd < bpo_unit_price_usd)
           OR (saving_vs_bpo_usd > 0) <> (verdict = 'AI cheaper')",
        )
        .await,
    );

    // waste: parts of spend.
    none(rows(&s, "SELECT * FROM waste WHERE failed_attempt_spend_usd > spend_usd OR unresolved_item_spend_usd > failed_attempt_spend_usd OR overkill_spend_usd < 0").await);

    // allocation: exactly one of the five decisions per workflow.
    assert_eq!(
        rows(&s, "SELECT count(*) AS decisions, count(DISTINCT workflow) AS workflows FROM allocation").await,
        rows(&s, "SELECT count(DISTINCT workflow) AS decisions, count(DISTINCT workflow) AS workflows FROM outcomes").await
    );
    none(rows(&s, "SELECT * FROM allocation WHERE decision NOT IN ('outsource to BPO', 'keep human', 'route to cheaper model', 'invest more compute', 'cap spend')").await);
}

#[tokio::test]
async fn report_spend_matches_the_span_total() {
    // Every dollar of every span of a work item with an outcome lands in cost_per_outcome.
    let (_dir, s) = generated().await;
    let totals = rows(&s, "
        SELECT (SELECT sum(spend_usd) FROM cost_per_outcome WHERE tenant IS NULL),
               (SELECT sum(coalesce(cost_usd, token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time))) FROM spans)").await;
    let (a, b): (f64, f64) = (totals[0][0].parse().unwrap(), totals[0][1].parse().unwrap());
    assert!((a - b).abs() <= 1e-9 * b, "{a} vs {b}");
}

#[tokio::test]
async fn every_report_run_by_a_front_end_comes_ordered_by_its_first_two_columns() {
    use arrow::array::make_comparator;
    use arrow::compute::SortOptions;
    use std::cmp::Ordering;
    let (_dir, s) = generated().await;
    let order = SortOptions {
        descending: false,
        nulls_first: true,
    };
    for report in tokenledger_engine::reports::reports() {
        let batches = s.report(report).await.unwrap().collect().await.unwrap();
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert!(all.num_rows() > 1, "{}: too few rows to tell", report.name);
        let compare: Vec<_> = (0..2)
            .map(|c| make_comparator(all.column(c), all.column(c), order).unwrap())
            .collect();
        for row in 1..all.num_rows() {
            let by_columns = compare
                .iter()
                .map(|cmp| cmp(row - 1, row))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal);
            assert_ne!(
                by_columns,
                Ordering::Greater,
                "{}: row {row} comes before row {}",
                report.name,
                row - 1
            );
        }
    }
}

/// Copies the directory tree at `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A `report_settings.csv` in the data location changes the reports' thresholds from the next
/// query on; a bad one fails the reports with its line named, and nothing else. Expected values
/// are testdata/handmade/HAND_CALC.md's: invoice has 8 LLM calls of 5,000 prompt tokens costing
/// 0.01848 in all, and a value per extra dollar of −715.04.
#[tokio::test]
async fn report_settings_file_overrides_thresholds_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &crate::support::repo_root().join("testdata/handmade"),
        dir.path(),
    );
    let s = open(dir.path()).await;
    let invoice_growth = "SELECT reference_context_tokens, round(spend_above_reference_usd, 6) \
                          FROM context_growth WHERE workflow = 'invoice'";
    let decisions = "SELECT workflow, decision FROM allocation ORDER BY workflow";
    assert_eq!(rows(&s, invoice_growth).await, [["8000", "0.0"]]);
    assert_eq!(
        rows(&s, decisions).await,
        [
            ["invoice", "cap spend"],
            ["support_ticket", "outsource to BPO"]
        ]
    );

    let file = dir.path().join("report_settings.csv");
    std::fs::write(
        &file,
        "name,value\n# below every invoice prompt\nreference_context_tokens,4000\n\
         invest_min_value_per_dollar,-1000\n",
    )
    .unwrap();
    // 5,000-token prompts are now long: all of invoice's LLM spend is above the reference.
    assert_eq!(rows(&s, invoice_growth).await, [["4000", "0.01848"]]);
    // −715 ≥ −1000: invoice's extra compute now counts as worth it; support still fails rule 1.
    assert_eq!(
        rows(&s, decisions).await,
        [
            ["invoice", "invest more compute"],
            ["support_ticket", "outsource to BPO"]
        ]
    );
    let shown = format!("{}:3", file.display());
    assert_eq!(
        rows(
            &s,
            "SELECT value, source FROM report_settings WHERE name = 'reference_context_tokens'"
        )
        .await,
        [["4000.0", shown.as_str()]]
    );

    std::fs::write(&file, "name,value\nsuccess_tolerence,0.1\n").unwrap();
    let error = async {
        let frame = s
            .plan_sql(decisions, tokenledger_engine::Access::ReadOnly)
            .await?;
        Ok::<_, tokenledger_engine::EngineError>(frame.collect().await?)
    }
    .await
    .unwrap_err();
    let message = error.user_message();
    assert!(
        message.contains(&format!("{}:2", file.display()))
            && message.contains("unknown setting \"success_tolerence\""),
        "{message}"
    );
    assert_eq!(rows(&s, "SELECT count(*) FROM outcomes").await, [["12"]]);
}

/// `cache_and_tier_savings` on the companion hand-made set (testdata/handmade/HAND_CALC.md,
/// "Cache writes, tiers and long context"): every figure worked out by hand there.
#[tokio::test]
async fn cache_and_tier_savings_match_the_hand_calculation() {
    let s = open(&crate::support::repo_root().join("testdata/cache-tiers")).await;
    let got = rows(
        &s,
        "SELECT workflow, model, llm_calls, calls_reading_cache, cache_hit_rate,
                round(cached_input_share, 6), cache_read_tokens, cache_write_tokens,
                round(cache_read_saving_usd, 9), round(cache_write_extra_usd, 9),
                round(net_cache_saving_usd, 9), caching_pays, round(batch_spend_usd, 9),
                round(standard_spend_usd, 9), round(batch_saving_usd, 9),
                calls_without_batch_price, unpriced_calls
         FROM cache_and_tier_savings ORDER BY model",
    )
    .await;
    let expected = [
        [
            "claims",
            "claude-opus-4-1",
            "1",
            "0",
            "0.0",
            "0.0",
            "0",
            "10000",
            "0.0",
            "0.0375",
            "-0.0375",
            "false",
            "0.0",
            "0.225",
            "NULL",
            "1",
            "0",
        ],
        [
            "claims",
            "claude-sonnet-4-5",
            "6",
            "3",
            "0.5",
            "0.207885",
            "58000",
            "14000",
            "0.2889",
            "0.01125",
            "0.27765",
            "true",
            "0.01155",
            "1.34505",
            "0.987525",
            "0",
            "1",
        ],
    ];
    assert_eq!(got, expected.map(|row| row.map(String::from).to_vec()));
}
