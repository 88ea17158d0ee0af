//! The policy as a SQL predicate, and `spans` read through it once a file breaking it is known.
//!
//! Files that pipelines drop are checked when first listed ([`crate::storage::files`]): each
//! one's rows are counted per rule, shown in `tokenledger_files`. Their rows that break a rule
//! are left out of every query of `spans` (and so of every report), never corrected: a session
//! that has met such a file reads `spans` through [`valid_span_predicate`]. Until then nothing
//! changes in any plan, so data written by tokenledger's own writers (checked at the door) pays
//! nothing.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Expr, TableProviderFilterPushDown, TableType, cast, col, lit, when,
};
use datafusion::physical_plan::ExecutionPlan;

use super::{EARLIEST_START_MICROS, MAX_COST_USD, MAX_DURATION_MS, MAX_TOKENS, Policy};
use crate::plan_node::filtered_scan;
use crate::storage::files::TableFileStore;

/// The token columns, as the policy checks them.
const TOKEN_COLUMNS: [&str; 6] = [
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
];

/// The columns the predicate reads.
pub const CHECKED_COLUMNS: [&str; 11] = [
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
    "cost_usd",
    "start_time",
    "duration_ms",
    "docs_retrieved",
    "docs_used",
];

/// `column` as a double, 0 when absent. (A CASE, not `coalesce`: the predicate is planned
/// straight into a physical filter, and DataFusion's `coalesce` must be rewritten to a CASE by
/// the logical simplifier first.)
fn as_double(column: &str) -> Expr {
    when(col(column).is_null(), lit(0.0f64))
        .otherwise(cast(col(column), DataType::Float64))
        .expect("a CASE with one branch and an ELSE")
}

fn absent_or(column: &str, holds: Expr) -> Expr {
    col(column).is_null().or(holds)
}

fn within(column: &str, low: Expr, high: Expr) -> Expr {
    absent_or(column, col(column).between(low, high))
}

fn either_absent_or(a: &str, b: &str, holds: Expr) -> Expr {
    col(a).is_null().or(col(b).is_null()).or(holds)
}

impl Policy {
    /// True for the rows of `spans` that meet every rule of [`Policy::check`] (the tests hold
    /// the two to the same answers). NaN costs fail, as they fail `0 <= cost <= max`.
    pub fn valid_span_predicate(&self) -> Expr {
        let timestamp = |micros: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(micros),
                Some("UTC".into()),
            ))
        };
        let mut rules: Vec<Expr> = TOKEN_COLUMNS
            .iter()
            .map(|c| within(c, lit(0i64), lit(MAX_TOKENS)))
            .collect();
        rules.extend([
            // Reads and writes both inside input, added as doubles: exact below 2^53, and a
            // sum that large already breaks the token rule.
            col("input_tokens")
                .is_null()
                .or(col("cached_input_tokens")
                    .is_null()
                    .and(col("cache_write_input_tokens").is_null()))
                .or(
                    (as_double("cached_input_tokens") + as_double("cache_write_input_tokens"))
                        .lt_eq(cast(col("input_tokens"), DataType::Float64)),
                ),
            either_absent_or(
                "cache_write_1h_input_tokens",
                "cache_write_input_tokens",
                col("cache_write_1h_input_tokens").lt_eq(col("cache_write_input_tokens")),
            ),
            either_absent_or(
                "reasoning_tokens",
                "output_tokens",
                col("reasoning_tokens").lt_eq(col("output_tokens")),
            ),
            within("cost_usd", lit(0.0f64), lit(MAX_COST_USD)),
            within(
                "start_time",
                timestamp(EARLIEST_START_MICROS),
                timestamp(self.latest_start),
            ),
            within("duration_ms", lit(0i64), lit(MAX_DURATION_MS)),
            absent_or("docs_retrieved", col("docs_retrieved").gt_eq(lit(0i32))),
            absent_or("docs_used", col("docs_used").gt_eq(lit(0i32))),
            either_absent_or(
                "docs_used",
                "docs_retrieved",
                col("docs_used").lt_eq(col("docs_retrieved")),
            ),
        ]);
        rules
            .into_iter()
            .reduce(Expr::and)
            .expect("the policy has rules")
    }
}

/// `spans` as queries see it: the table itself, or, once the file store has met a file with
/// rows that break the policy, the table's rows that meet it.
#[derive(Debug)]
pub struct ValidRows {
    inner: Arc<dyn TableProvider>,
    files: Arc<TableFileStore>,
}

impl ValidRows {
    /// `inner` (the `spans` table), filtered once `files` has met a failing row.
    pub fn new(inner: Arc<dyn TableProvider>, files: Arc<TableFileStore>) -> Self {
        ValidRows { inner, files }
    }
}

#[async_trait]
impl TableProvider for ValidRows {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !self.files.has_failing_rows() {
            // The scan lists (and so checks) the files: a failing file met by this very
            // listing counts at once, and the scan is planned again through the filter.
            let plain = self.inner.scan(state, projection, filters, limit).await?;
            if !self.files.has_failing_rows() {
                return Ok(plain);
            }
        }
        let schema = self.inner.schema();
        let needed: Vec<usize> = CHECKED_COLUMNS
            .iter()
            .filter_map(|column| schema.index_of(column).ok())
            .collect();
        let filtered = filtered_scan(
            self.inner.as_ref(),
            state,
            projection,
            &needed,
            Policy::now().valid_span_predicate(),
            filters,
            limit,
        )
        .await?;
        Ok(Arc::new(filtered))
    }
}
