//! `tokenledger_files`: every file under every table directory, with whether queries read it.
//! Listed afresh by each query, so a pipeline's operator sees a file the moment it lands, and a
//! quarantined file with the reason it was left out.

use std::sync::{Arc, LazyLock};

use arrow::array::{Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;

use super::FreshRows;
use crate::error::Result;

use crate::schema::timestamp_type;
use crate::storage::files::{FileCheck, FileReport, TableFileStore};

/// The system table's name.
pub const FILES_TABLE: &str = "tokenledger_files";

static FILES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("modified", timestamp_type(), false),
        Field::new("rows", DataType::Int64, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        // `spans` files: rows breaking the validation policy (left out of queries), and how
        // many broke each rule; NULL for other tables.
        Field::new("rows_failing", DataType::Int64, true),
        Field::new("failed_rules", DataType::Utf8, true),
    ]))
});

/// The `tokenledger_files` table over a session's file store.
#[derive(Debug)]
pub struct FilesTable {
    store: Arc<TableFileStore>,
}

impl FilesTable {
    /// Reports on the files `store` sees.
    pub fn new(store: Arc<TableFileStore>) -> Self {
        FilesTable { store }
    }
}

#[async_trait]
impl FreshRows for FilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&FILES_SCHEMA)
    }

    async fn rows(&self) -> Result<RecordBatch> {
        report_batch(&self.store.file_report().await?)
    }
}

fn report_batch(report: &[FileReport]) -> Result<RecordBatch> {
    let mut table = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut size = Int64Builder::new();
    let mut modified = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut rows = Int64Builder::new();
    let mut status = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut failing = Int64Builder::new();
    let mut rules = StringBuilder::new();
    for file in report {
        table.append_value(file.table);
        path.append_value(&file.path);
        size.append_value(i64::try_from(file.size).unwrap_or(i64::MAX));
        modified.append_value(file.modified.timestamp_micros());
        match &file.check {
            FileCheck::Ok { rows: n, values } => {
                rows.append_value(i64::try_from(*n).unwrap_or(i64::MAX));
                status.append_value("ok");
                error.append_null();
                failing.append_option(values.as_ref().map(|v| v.failing_rows as i64));
                rules.append_option(values.as_ref().map(|v| v.summary()));
            }
            FileCheck::Quarantined(problem) => {
                rows.append_null();
                status.append_value("quarantined");
                error.append_value(problem.user_message());
                failing.append_null();
                rules.append_null();
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::clone(&FILES_SCHEMA),
        vec![
            Arc::new(table.finish()),
            Arc::new(path.finish()),
            Arc::new(size.finish()),
            Arc::new(modified.finish()),
            Arc::new(rows.finish()),
            Arc::new(status.finish()),
            Arc::new(error.finish()),
            Arc::new(failing.finish()),
            Arc::new(rules.finish()),
        ],
    )?)
}
