//! tokenledger as a sqllogictest database, and a runner over `sql/tests/*.slt`. Shared by the
//! engine's tests (one node) and the root crate's (through a coordinator and workers), which
//! include this file by path.

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokenledger_engine::{EngineError, TraceSession};

/// A tokenledger session as sqllogictest's database.
pub struct TokenledgerDb {
    pub session: TraceSession,
}

/// A failed statement, as the user sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SltError(String);

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
pub fn normalize_float(value: &str) -> String {
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

/// Every row of `batches` as text, NULL as "NULL".
pub fn stringify(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

/// Runs every `.slt` file of `sql/tests` (under `root`) against a fresh session from `open`
/// each; returns the failures. With `TOKENLEDGER_SLT_COMPLETE=1` it rewrites the expected
/// results instead.
pub async fn run_slt_files<F, Fut>(root: &std::path::Path, open: F) -> Vec<String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = TraceSession> + Send,
{
    let dir = root.join("sql/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let open = open.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let open = open.clone();
            async move {
                Ok::<_, SltError>(TokenledgerDb {
                    session: open().await,
                })
            }
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
    failures
}
