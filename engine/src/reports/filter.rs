//! Narrowing the reports to days, a workflow or a tenant, and the day ranges exports take.
//!
//! A filtered report is written out as one self-contained SQL statement: the filtered trace
//! tables as CTEs that shadow the tables, then every view the report builds on, then the report.
//! The report page runs exactly that statement and links to it, so an analyst can paste it into
//! a BI tool connected over Flight SQL and get the chart's rows.

use chrono::{Days, NaiveDate};

use crate::error::{EngineError, Result};
use crate::reports::{Report, VIEWS};
use crate::session::{CATALOG, SCHEMA};

/// Whole days in UTC, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// The first day.
    pub from: NaiveDate,
    /// The last day (included).
    pub to: NaiveDate,
}

impl DateRange {
    /// The days `from` to `to`; refused when `to` comes before `from`.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self> {
        if to < from {
            return Err(EngineError::Parameter(format!(
                "the range ends ({to}) before it starts ({from})"
            )));
        }
        Ok(DateRange { from, to })
    }

    /// The first instant of the range, in microseconds since the epoch.
    pub fn start_micros(&self) -> i64 {
        day_start_micros(self.from)
    }

    /// The first instant after the range (exclusive end), in microseconds since the epoch.
    pub fn end_micros(&self) -> i64 {
        day_start_micros(next_day(self.to))
    }
}

/// The first day a filter may name. Timestamp literals are nanoseconds since the epoch in an
/// `i64`, which reach back to 1677-09-21; whole days from here on fit.
pub const EARLIEST_DAY: NaiveDate = NaiveDate::from_ymd_opt(1678, 1, 1).expect("a valid day");
/// The last day a filter may name: the instant after it (the range's exclusive end,
/// 2262-04-11T00:00) still fits a nanosecond timestamp, which ends at 2262-04-11T23:47.
pub const LATEST_DAY: NaiveDate = NaiveDate::from_ymd_opt(2262, 4, 10).expect("a valid day");

/// Parses a `YYYY-MM-DD` day between [`EARLIEST_DAY`] and [`LATEST_DAY`]; `name` says which
/// parameter it was, for the error.
pub fn parse_date(name: &str, value: &str) -> Result<NaiveDate> {
    let day = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        EngineError::Parameter(format!("{name} {value:?} is not a date: use YYYY-MM-DD"))
    })?;
    if !(EARLIEST_DAY..=LATEST_DAY).contains(&day) {
        return Err(EngineError::Parameter(format!(
            "{name} {value:?} is outside the days the engine can represent: \
             {EARLIEST_DAY} to {LATEST_DAY}"
        )));
    }
    Ok(day)
}

fn next_day(day: NaiveDate) -> NaiveDate {
    day.checked_add_days(Days::new(1)).unwrap_or(NaiveDate::MAX)
}

fn day_start_micros(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// What the reports are narrowed to: each part optional, all parts together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Spans that started and work items that closed on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// … and on or before this day.
    pub to: Option<NaiveDate>,
    /// One workflow's spans and work items.
    pub workflow: Option<String>,
    /// One tenant's spans and work items.
    pub tenant: Option<String>,
}

/// The trace tables a filter narrows, each with the instant its rows are placed in time by.
const FILTERED_TABLES: [(&str, &str); 2] = [("spans", "start_time"), ("outcomes", "closed_at")];

impl ReportFilter {
    /// Whether nothing is narrowed.
    pub fn is_empty(&self) -> bool {
        *self == ReportFilter::default()
    }

    /// Refuses a range that ends before it starts.
    pub fn check(&self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            DateRange::new(from, to)?;
        }
        Ok(())
    }

    /// The condition on a table's rows, placed in time by `time_column`.
    fn condition(&self, time_column: &str) -> String {
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("{time_column} >= TIMESTAMP '{from}T00:00:00Z'"));
        }
        if let Some(to) = self.to {
            parts.push(format!(
                "{time_column} < TIMESTAMP '{}T00:00:00Z'",
                next_day(to)
            ));
        }
        if let Some(workflow) = &self.workflow {
            parts.push(format!("workflow = {}", quote(workflow)));
        }
        if let Some(tenant) = &self.tenant {
            parts.push(format!("tenant = {}", quote(tenant)));
        }
        parts.join(" AND ")
    }

    /// One statement giving `report`'s rows under this filter, ordered as front ends show
    /// reports (first two columns, NULLs first). Without a filter it reads the view itself.
    pub fn sql(&self, report: &Report) -> String {
        let order = "ORDER BY 1 NULLS FIRST, 2 NULLS FIRST";
        if self.is_empty() {
            return format!("SELECT * FROM {} {order}", report.name);
        }
        let mut ctes: Vec<String> = FILTERED_TABLES
            .iter()
            .map(|(table, time_column)| {
                format!(
                    "{table} AS (\n    SELECT * FROM {CATALOG}.{SCHEMA}.{table}\n    WHERE {}\n)",
                    self.condition(time_column)
                )
            })
            .collect();
        ctes.extend(
            views_behind(report)
                .into_iter()
                .map(|view| format!("{} AS (\n{}\n)", view.name, view.sql.trim_end())),
        );
        format!(
            "-- {}, narrowed to {}\nWITH {}\nSELECT * FROM {} {order}",
            report.name,
            self.describe(),
            ctes.join(",\n"),
            report.name
        )
    }

    /// Which parts narrow the rows, for the SQL's header comment. It names the parts, never
    /// their values: a comment ends at a newline, so text a user typed (a workflow or tenant)
    /// would leave it and be read as SQL. The values are in the WHERE clauses, as literals.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.from.is_some() || self.to.is_some() {
            parts.push("days");
        }
        if self.workflow.is_some() {
            parts.push("a workflow");
        }
        if self.tenant.is_some() {
            parts.push("a tenant");
        }
        format!("{} (see the WHERE clauses below)", parts.join(", "))
    }
}

/// A SQL string literal: quotes doubled, so any text stays one literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `report` and every view it reads, directly or through others, in dependency order.
fn views_behind(report: &Report) -> Vec<&'static Report> {
    let Some(position) = VIEWS.iter().position(|v| v.name == report.name) else {
        return Vec::new();
    };
    let mut needed = vec![&VIEWS[position]];
    // VIEWS is in dependency order: walking back, a view is needed when one already needed
    // names it.
    for view in VIEWS[..position].iter().rev() {
        if needed.iter().any(|n| names(n.sql, view.name)) {
            needed.push(view);
        }
    }
    needed.reverse();
    needed
}

/// Whether `sql` (comments left out) names `identifier` as a whole word.
fn names(sql: &str, identifier: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .any(|line| {
            line.match_indices(identifier).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + identifier.len()..].chars().next();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::view;

    fn behind(report: &str) -> Vec<&'static str> {
        views_behind(view(report).unwrap())
            .iter()
            .map(|v| v.name)
            .collect()
    }

    #[test]
    fn a_report_brings_the_views_it_reads_in_dependency_order() {
        assert_eq!(
            behind("allocation"),
            [
                "priced_spans",
                "work_item_costs",
                "attempt_costs",
                "cost_per_outcome",
                "routing_candidates",
                "bpo_comparison",
                "marginal_utility",
                "allocation"
            ]
        );
        assert_eq!(
            behind("cost_per_outcome"),
            ["priced_spans", "work_item_costs", "cost_per_outcome"]
        );
    }

    #[test]
    fn quotes_cannot_leave_the_literal() {
        let filter = ReportFilter {
            workflow: Some("x' OR '1'='1".into()),
            ..Default::default()
        };
        assert!(
            filter
                .condition("start_time")
                .contains("workflow = 'x'' OR ''1''=''1'")
        );
    }

    /// Whatever a user types as a workflow or tenant (a newline ending a comment, comment
    /// markers, quotes, NUL, a long value) appears in the statement only as whole string
    /// literals: every other token, comments included, is free of it.
    #[test]
    fn typed_text_reaches_the_statement_only_as_literals() {
        use datafusion::sql::sqlparser::dialect::GenericDialect;
        use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
        let long = format!("MARK{}", "-- '\n".repeat(200));
        let hostile = [
            "MARK\nSELECT 1 --",
            "MARK\r\nSELECT 1; --",
            "MARK' OR '1'='1",
            "MARK -- rest",
            "MARK /* open",
            "MARK */ close",
            "MARK\0nul",
            "MARK\\'; DROP TABLE spans; --",
            long.as_str(),
        ];
        for value in hostile {
            let filter = ReportFilter {
                from: Some(parse_date("from", "2026-01-01").unwrap()),
                workflow: Some(value.into()),
                tenant: Some(value.into()),
                ..Default::default()
            };
            let sql = filter.sql(view("allocation").unwrap());
            let tokens = Tokenizer::new(&GenericDialect {}, &sql)
                .tokenize()
                .unwrap_or_else(|e| panic!("{value:?}: {e}\n{sql}"));
            let literals = tokens
                .iter()
                .filter(|t| matches!(t, Token::SingleQuotedString(s) if s == value))
                .count();
            // workflow and tenant, in each of the two filtered tables
            assert_eq!(literals, 4, "{value:?}:\n{sql}");
            for token in &tokens {
                if !matches!(token, Token::SingleQuotedString(_)) {
                    assert!(
                        !token.to_string().contains("MARK"),
                        "{value:?} leaked into {token:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn days_the_engine_cannot_represent_are_refused_with_the_range() {
        for value in [
            "9999-12-31",
            "0001-01-01",
            "+10000-01-01",
            "1677-12-31",
            "2262-04-11",
        ] {
            let error = parse_date("from", value).unwrap_err().to_string();
            assert!(
                error.contains(
                    "outside the days the engine can represent: 1678-01-01 to 2262-04-10"
                ),
                "{value}: {error}"
            );
        }
        for value in ["1678-01-01", "2262-04-10"] {
            let day = parse_date("to", value).unwrap();
            let range = DateRange::new(day, day).unwrap();
            assert!(range.start_micros() < range.end_micros());
        }
    }

    #[test]
    fn days_are_whole_and_the_last_is_included() {
        let range = DateRange::new(
            parse_date("--from", "2026-01-31").unwrap(),
            parse_date("--to", "2026-01-31").unwrap(),
        )
        .unwrap();
        assert_eq!(range.end_micros() - range.start_micros(), 86_400_000_000);
        assert_eq!(range.start_micros(), 1_769_817_600_000_000);
        let error = parse_date("from", "31/01/2026").unwrap_err().to_string();
        assert!(error.contains("\"31/01/2026\" is not a date"), "{error}");
        let error = DateRange::new(range.to, range.from - Days::new(1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ends (2026-01-30) before it starts (2026-01-31)"),
            "{error}"
        );
    }
}
