//! The FinOps FOCUS export: AI spend as FOCUS 1.0 cost and usage rows, so FinOps tools that
//! collect every cloud bill in FOCUS see it too. The query is `sql/exports/focus.sql`.

use datafusion::prelude::DataFrame;
use datafusion::scalar::ScalarValue;

use crate::error::Result;
use crate::reports::filter::DateRange;
use crate::session::{Access, TraceSession};

/// The export's query, with `$1` (first instant, inclusive) and `$2` (end, exclusive).
pub const FOCUS_SQL: &str = include_str!("../../../sql/exports/focus.sql");

/// The FOCUS rows of the spans that started in `range` (whole UTC days), ordered by day,
/// provider, SKU, sub account, token type and pricing method.
pub async fn focus_rows(session: &TraceSession, range: DateRange) -> Result<DataFrame> {
    let utc = |micros| ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()));
    let frame = session
        .plan_sql(FOCUS_SQL, Access::ReadOnly)
        .await?
        .with_param_values(vec![utc(range.start_micros()), utc(range.end_micros())])?;
    Ok(frame)
}
