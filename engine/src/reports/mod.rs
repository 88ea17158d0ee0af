//! The reports: SQL views over the trace tables, kept as readable files in `sql/reports/` and
//! compiled into the binary so every session (CLI, Flight SQL) has them; [`filter`] narrows
//! them to days, a workflow or a tenant, and [`focus`] exports spend for FinOps tools.

pub mod filter;
pub mod focus;

use datafusion::logical_expr::SortExpr;
use datafusion::prelude::{DataFrame, SessionContext, col};

use crate::error::{EngineError, Result};

/// A view defined by a `.sql` file.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// View name (the file's stem).
    pub name: &'static str,
    /// The query, with its header comment.
    pub sql: &'static str,
}

/// How a building block's header starts: views the reports are built from. They are views too,
/// but not listed among the reports, and their rows come in no particular order.
const BUILDING_BLOCK: &str = "-- Building block:";

impl Report {
    /// Whether this view is a building block of the reports rather than a report (its file's
    /// header says so).
    pub fn building_block(&self) -> bool {
        self.sql.starts_with(BUILDING_BLOCK)
    }

    /// The first comment line: what the view answers.
    pub fn summary(&self) -> &'static str {
        self.sql
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("--"))
            .map_or("", |s| {
                s.trim().trim_start_matches("Building block:").trim()
            })
    }
}

macro_rules! view {
    ($name:literal) => {
        Report {
            name: $name,
            sql: include_str!(concat!("../../../sql/reports/", $name, ".sql")),
        }
    };
}

/// Every view in `sql/reports/`, in dependency order (each may use those before it). A test
/// checks that this names every file there.
pub static VIEWS: [Report; 12] = [
    view!("priced_spans"),
    view!("work_item_costs"),
    view!("attempt_costs"),
    view!("cost_per_outcome"),
    view!("retry_tail"),
    view!("context_growth"),
    view!("routing_candidates"),
    view!("bpo_comparison"),
    view!("marginal_utility"),
    view!("waste"),
    view!("cache_and_tier_savings"),
    view!("allocation"),
];

/// The reports users run (the views that are not building blocks).
pub fn reports() -> impl Iterator<Item = &'static Report> {
    VIEWS.iter().filter(|r| !r.building_block())
}

/// `report`'s rows ordered by its first two columns, NULLs first: how a front end that runs a
/// report shows it. (A view cannot carry the order itself: DataFusion drops an `ORDER BY` inside
/// a view, as SQL allows, so a client querying the view sorts for itself.)
pub(crate) async fn ordered(ctx: &SessionContext, report: &Report) -> Result<DataFrame> {
    let frame = ctx.table(report.name).await?;
    let order: Vec<SortExpr> = frame
        .schema()
        .columns()
        .into_iter()
        .take(2)
        .map(|column| col(column).sort(true, true))
        .collect();
    Ok(frame.sort(order)?)
}

/// Looks a view up by name.
pub fn view(name: &str) -> Option<&'static Report> {
    VIEWS.iter().find(|r| r.name == name)
}

/// Registers every view on `ctx` (after the tables and functions they use).
pub async fn register_views(ctx: &SessionContext) -> Result<()> {
    for view in &VIEWS {
        let create = format!("CREATE VIEW {} AS\n{}", view.name, view.sql);
        ctx.sql(&create).await.map_err(|e| EngineError::View {
            name: view.name.to_string(),
            reason: EngineError::from(e).user_message(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_sql_reports_is_a_view_and_every_view_a_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/reports");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|name| name.strip_suffix(".sql").map(str::to_string))
            .collect();
        files.sort();
        let mut views: Vec<String> = VIEWS.iter().map(|v| v.name.to_string()).collect();
        views.sort();
        assert_eq!(views, files);
        // Headers say which are building blocks: the three the reports are built from.
        let blocks: Vec<&str> = VIEWS
            .iter()
            .filter(|v| v.building_block())
            .map(|v| v.name)
            .collect();
        assert_eq!(blocks, ["priced_spans", "work_item_costs", "attempt_costs"]);
    }
}
