//! Batches built column by column, by name.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;

use crate::error::{GenError, Result};

/// A batch of `schema`, each column taken by its name from `column`: the table's schema decides
/// the order, so a column added or moved there cannot be filled from the wrong builder.
pub fn batch_by_name(
    table: &'static str,
    schema: SchemaRef,
    mut column: impl FnMut(&str) -> Option<ArrayRef>,
) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            column(field.name()).ok_or_else(|| GenError::Columns {
                table,
                reason: format!("the generator has no column {:?}", field.name()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| GenError::Columns {
        table,
        reason: e.to_string(),
    })
}
