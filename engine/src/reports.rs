//! The reports: SQL views over the trace tables, kept as readable files in `sql/reports/` and
//! compiled into the binary so every session (CLI, Flight SQL) has them.

use datafusion::prelude::SessionContext;

use crate::error::{EngineError, Result};

/// A view defined by a `.sql` file.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// View name (the file's stem).
    pub name: &'static str,
    /// The query, with its header comment.
    pub sql: &'static str,
    /// Building blocks are views the reports are built from; they are views too, but not listed
    /// among the reports.
    pub building_block: bool,
}

impl Report {
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
    ($name:literal, $building_block:expr) => {
        Report {
            name: $name,
            sql: include_str!(concat!("../../sql/reports/", $name, ".sql")),
            building_block: $building_block,
        }
    };
}

/// Every view, in dependency order (each may use those before it).
pub static VIEWS: [Report; 10] = [
    view!("priced_spans", true),
    view!("work_item_costs", true),
    view!("cost_per_outcome", false),
    view!("retry_tail", false),
    view!("context_growth", false),
    view!("routing_candidates", false),
    view!("bpo_comparison", false),
    view!("marginal_utility", false),
    view!("waste", false),
    view!("allocation", false),
];

/// The reports users run (the views that are not building blocks).
pub fn reports() -> impl Iterator<Item = &'static Report> {
    VIEWS.iter().filter(|r| !r.building_block)
}

/// Looks a view up by name.
pub fn view(name: &str) -> Option<&'static Report> {
    VIEWS.iter().find(|r| r.name == name)
}

/// Registers every view on `ctx` (after the tables and functions they use).
pub async fn register_views(ctx: &SessionContext) -> Result<()> {
    for view in &VIEWS {
        let create = format!("CREATE VIEW {} AS\n{}", view.name, view.sql);
        ctx.sql(&create).await.map_err(|e| {
            EngineError::Input(format!(
                "report view {} does not compile: {}",
                view.name,
                EngineError::from(e).user_message()
            ))
        })?;
    }
    Ok(())
}
