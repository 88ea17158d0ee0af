//! Runs the SQL tests in `sql/tests/*.slt` (sqllogictest format, as apache/datafusion does)
//! against tokenledger's own session over the hand-made data set.

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
        let to_error =
            |e: datafusion::error::DataFusionError| SltError(EngineError::from(e).user_message());
        let frame = self.session.ctx.sql(sql).await.map_err(to_error)?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await.map_err(to_error)?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
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
                    .map(|v| if v.is_empty() { "(empty)".into() } else { v })
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
        if let Err(e) = runner.run_file_async(file).await {
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
