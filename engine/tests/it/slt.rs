//! Runs the SQL tests in `sql/tests/*.slt` (sqllogictest format, as apache/datafusion does)
//! against tokenledger's own session over the hand-made data set.
//!
//! Floating-point results are shown as DataFusion's own runner shows them: rounded to 12
//! decimal places, trailing zeros dropped, so expected values need no `round()`.
//! `TOKENLEDGER_SLT_COMPLETE=1 cargo test -p tokenledger-engine --test it slt` rewrites the
//! expected results in place from what the engine answers (then review the diff).

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokenledger_engine::{EngineError, TraceSession};

use crate::support::{open, repo_root, stringify};

struct TokenledgerDb {
    session: TraceSession,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

#[async_trait]
impl sqllogictest::AsyncDB for TokenledgerDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let to_error = |e: EngineError| SltError(e.user_message());
        let frame = self
            .session
            .plan_sql(sql, tokenledger_engine::Access::ReadWrite)
            .await
            .map_err(to_error)?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await.map_err(|e| to_error(e.into()))?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types: Vec<DefaultColumnType> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                t if t.is_floating() || t.is_decimal() => DefaultColumnType::FloatingPoint,
                t if t.is_string() => DefaultColumnType::Text,
                _ => DefaultColumnType::Any,
            })
            .collect();
        let rows = stringify(&batches)
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .zip(&types)
                    .map(|(v, ty): (String, &DefaultColumnType)| match v.as_str() {
                        "" => "(empty)".into(),
                        _ if *ty == DefaultColumnType::FloatingPoint => normalize_float(&v),
                        _ => v,
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tokenledger"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// A floating-point value as DataFusion's sqllogictest runner shows it: 12 decimal places,
/// trailing zeros (and a trailing point) dropped, no negative zero. NULL and non-numbers
/// (`NaN`, `inf`) are left as they are.
fn normalize_float(value: &str) -> String {
    let Ok(number) = value.parse::<f64>() else {
        return value.to_string();
    };
    if !number.is_finite() {
        return value.to_string();
    }
    let fixed = format!("{number:.12}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "-0" => "0".to_string(),
        other => other.to_string(),
    }
}

#[test]
fn floats_are_shown_rounded_to_12_places() {
    assert_eq!(normalize_float("0.30000000000000004"), "0.3");
    assert_eq!(normalize_float("0.3333333333333333"), "0.333333333333");
    assert_eq!(normalize_float("1234.5"), "1234.5");
    assert_eq!(normalize_float("2.0"), "2");
    assert_eq!(normalize_float("-0.0000000000001"), "0");
    assert_eq!(normalize_float("1e-7"), "0.0000001");
    assert_eq!(normalize_float("NULL"), "NULL");
    assert_eq!(normalize_float("NaN"), "NaN");
}

#[tokio::test]
async fn sql_logic_tests() {
    let dir = repo_root().join("sql/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok::<_, SltError>(TokenledgerDb {
                session: open(&repo_root().join("testdata/handmade")).await,
            })
        });
        if std::env::var("TOKENLEDGER_SLT_COMPLETE").as_deref() == Ok("1") {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("rewriting {}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} .slt files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
