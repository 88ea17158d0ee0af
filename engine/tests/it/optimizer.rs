//! Every tokenledger optimizer rule is switched off by its setting: with the setting the plan
//! has none of the rule's nodes, without it the plan has them, and the answer is the same
//! either way.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use tokenledger_engine::optimizer::text_eq::TextEqualsLiteral;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};

use crate::support::{generated, stringify};

/// A rule, the setting that switches it off, a query it rewrites, and how to see the rewrite
/// in the physical plan.
struct Case {
    setting: &'static str,
    off: &'static str,
    sql: &'static str,
    rewritten: fn(&Arc<dyn ExecutionPlan>) -> bool,
}

fn has_node(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
    plan.exists(|node| Ok(node.name() == name)).unwrap()
}

fn has_text_equality(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| {
        Ok(node.downcast_ref::<FilterExec>().is_some_and(|filter| {
            filter
                .predicate()
                .exists(|expr| Ok(expr.downcast_ref::<TextEqualsLiteral>().is_some()))
                .unwrap()
        }))
    })
    .unwrap()
}

const CASES: [Case; 5] = [
    Case {
        setting: "tokenledger_optimizer.text_equality",
        off: "false",
        sql: "SELECT count(*), sum(input_tokens) FROM spans WHERE model = 'claude-sonnet-4-5'",
        rewritten: has_text_equality,
    },
    Case {
        setting: "tokenledger_optimizer.topk_two_pass",
        off: "false",
        sql: "SELECT trace_id, span_id, input_tokens FROM spans \
              ORDER BY input_tokens DESC NULLS LAST, trace_id, span_id LIMIT 7",
        rewritten: |plan| has_node(plan, "ThresholdScanExec"),
    },
    Case {
        setting: "tokenledger_optimizer.eager_aggregation",
        off: "false",
        sql: "SELECT o.outcome, count(*), sum(s.input_tokens) FROM spans s \
              JOIN outcomes o ON s.work_item_id = o.work_item_id GROUP BY o.outcome ORDER BY 1",
        // The aggregation added below the join makes a second partial aggregation.
        rewritten: |plan| {
            let mut aggregations = 0;
            plan.apply(|node| {
                aggregations += usize::from(node.name() == "AggregateExec");
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
            aggregations > 2
        },
    },
    Case {
        setting: "tokenledger_optimizer.partial_budget_bytes",
        off: "0",
        sql: "SELECT work_item_id, count(*), sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1",
        rewritten: |plan| has_node(plan, "PartialAggregateBudgetExec"),
    },
    Case {
        setting: "tokenledger_optimizer.final_fan_out",
        off: "1",
        sql: "SELECT work_item_id, count(*), sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1",
        rewritten: |plan| has_node(plan, "InTurnExec"),
    },
];

async fn session(dir: &std::path::Path, settings: Vec<(String, String)>) -> TraceSession {
    TraceSession::open(
        DataLocation::parse(dir.to_str().unwrap()).unwrap(),
        &SessionOptions {
            settings,
            target_partitions: Some(2),
            ..SessionOptions::default()
        },
    )
    .await
    .unwrap()
}

/// The physical plan of `sql` and its rows as text.
async fn plan_and_rows(
    session: &TraceSession,
    sql: &str,
) -> (Arc<dyn ExecutionPlan>, Vec<Vec<String>>) {
    let frame = session.plan_sql(sql, Access::ReadWrite).await.unwrap();
    let plan = frame.clone().create_physical_plan().await.unwrap();
    (plan, stringify(&frame.collect().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_is_switched_off_by_its_setting_and_changes_no_answer() {
    let data = generated(3_000, 20_000).await;
    let on = session(data.path(), Vec::new()).await;
    for case in CASES {
        let off = session(data.path(), vec![(case.setting.into(), case.off.into())]).await;
        let (plan_on, rows_on) = plan_and_rows(&on, case.sql).await;
        let (plan_off, rows_off) = plan_and_rows(&off, case.sql).await;
        assert!(
            (case.rewritten)(&plan_on),
            "{} on: the rule should rewrite {}",
            case.setting,
            case.sql
        );
        assert!(
            !(case.rewritten)(&plan_off),
            "{} = {}: the rule should not run",
            case.setting,
            case.off
        );
        assert_eq!(rows_on, rows_off, "{}", case.setting);
        assert!(
            !rows_on.is_empty() && rows_on[0].iter().all(|v| v != "NULL" && v != "0"),
            "{}: a real answer: {rows_on:?}",
            case.setting
        );
    }
}
