//! What clients are told about tables, columns and types, and the Utf8 (not Utf8View) results
//! they expect.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::logical_expr::LogicalPlan;
use tokenledger_engine::schema;

/// The type a client receives for `data_type`: view and large string/binary types become plain
/// Utf8/Binary (some clients show views as BLOB); nested types are converted inside.
pub fn client_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, value) => client_type(value),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => DataType::List(Arc::new(client_field(f))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| client_field(f)).collect())
        }
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(client_field(entries)), *sorted),
        other => other.clone(),
    }
}

fn client_field(field: &Field) -> Field {
    field.clone().with_data_type(client_type(field.data_type()))
}

/// The schema a client receives for a result of `schema`.
pub fn client_schema(schema: &Schema) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| client_field(f))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// Casts a result batch to its client schema (a no-op when nothing changes).
pub fn to_client_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The SQL type name JDBC and ODBC show for a column type.
pub fn sql_type_name(data_type: &DataType) -> &'static str {
    match client_type(data_type) {
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 | DataType::UInt8 => "SMALLINT",
        DataType::Int32 | DataType::UInt16 => "INTEGER",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BIGINT",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => "DECIMAL",
        DataType::Utf8 => "VARCHAR",
        DataType::Binary | DataType::FixedSizeBinary(_) => "VARBINARY",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::List(_) => "ARRAY",
        DataType::Struct(_) => "STRUCT",
        DataType::Map(_, _) => "MAP",
        _ => "OTHER",
    }
}

/// A table's columns with the `ARROW:FLIGHT:SQL:*` field metadata JDBC reads (type name,
/// precision, scale, read-only, …) and the column's documentation as its remarks.
pub fn describe_columns(catalog: &str, schema_name: &str, table: &str, schema: &Schema) -> Schema {
    let table_doc =
        schema::table(table).filter(|_| schema_name == tokenledger_engine::session::SCHEMA);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let data_type = client_type(field.data_type());
            let (precision, scale) = match &data_type {
                DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                    (i32::from(*p), i32::from(*s))
                }
                DataType::Int32 => (10, 0),
                DataType::Int64 => (19, 0),
                DataType::Float64 => (15, 0),
                DataType::Timestamp(_, _) => (26, 6),
                _ => (0, 0),
            };
            let mut metadata = HashMap::from([
                (
                    "ARROW:FLIGHT:SQL:CATALOG_NAME".to_string(),
                    catalog.to_string(),
                ),
                (
                    "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME".to_string(),
                    schema_name.to_string(),
                ),
                ("ARROW:FLIGHT:SQL:TABLE_NAME".to_string(), table.to_string()),
                (
                    "ARROW:FLIGHT:SQL:TYPE_NAME".to_string(),
                    sql_type_name(&data_type).to_string(),
                ),
                (
                    "ARROW:FLIGHT:SQL:PRECISION".to_string(),
                    precision.to_string(),
                ),
                ("ARROW:FLIGHT:SQL:SCALE".to_string(), scale.to_string()),
                (
                    "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".to_string(),
                    "0".to_string(),
                ),
                (
                    "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".to_string(),
                    u8::from(data_type == DataType::Utf8).to_string(),
                ),
                ("ARROW:FLIGHT:SQL:IS_READ_ONLY".to_string(), "1".to_string()),
                (
                    "ARROW:FLIGHT:SQL:IS_SEARCHABLE".to_string(),
                    "1".to_string(),
                ),
            ]);
            if let Some(column) = table_doc.and_then(|t| t.column(field.name())) {
                metadata.insert(
                    "ARROW:FLIGHT:SQL:REMARKS".to_string(),
                    column.doc.to_string(),
                );
            }
            Field::new(field.name(), data_type, field.is_nullable()).with_metadata(metadata)
        })
        .collect();
    Schema::new(fields)
}

/// The parameters of a planned query as a schema (`$1`, `$2`, … in order; type Utf8 where
/// DataFusion could not infer one, so clients have something to bind).
pub fn parameter_schema(plan: &LogicalPlan) -> Result<Schema> {
    let mut params: Vec<(String, Option<DataType>)> =
        plan.get_parameter_types()?.into_iter().collect();
    params.sort_by_key(|(name, _)| {
        name.trim_start_matches('$')
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    Ok(Schema::new(
        params
            .into_iter()
            .map(|(name, data_type)| {
                Field::new(
                    name,
                    client_type(&data_type.unwrap_or(DataType::Utf8)),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// The schema of GetPrimaryKeys results (tokenledger's tables have none; the answer is empty).
pub fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The schema of GetExportedKeys, GetImportedKeys and GetCrossReference results (empty).
pub fn foreign_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: i32,
    quoted: bool,
    numeric: bool,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size: Some(column_size),
        literal_prefix: quoted.then(|| "'".to_string()),
        literal_suffix: quoted.then(|| "'".to_string()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: false,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// GetXdbcTypeInfo: every type tokenledger's tables, views and functions produce.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BIGINT", XdbcDataType::XdbcBigint, 19, false, true),
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, 1, false, false),
        xdbc("DATE", XdbcDataType::XdbcDate, 10, true, false),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, 38, false, true),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, 15, false, true),
        xdbc("INTEGER", XdbcDataType::XdbcInteger, 10, false, true),
        xdbc("REAL", XdbcDataType::XdbcReal, 7, false, true),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, 5, false, true),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, 26, true, false),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, 3, false, true),
        xdbc(
            "VARBINARY",
            XdbcDataType::XdbcVarbinary,
            i32::MAX,
            false,
            false,
        ),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, i32::MAX, true, false),
    ] {
        builder.append(info);
    }
    builder.build().expect("static type info is well-formed")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_and_large_types_reach_clients_as_plain_types() {
        assert_eq!(client_type(&DataType::Utf8View), DataType::Utf8);
        assert_eq!(client_type(&DataType::LargeBinary), DataType::Binary);
        let map = tokenledger_engine::schema::text_map_type();
        assert_eq!(client_type(&map), map);
        assert_eq!(
            client_type(&DataType::List(Arc::new(Field::new(
                "item",
                DataType::Utf8View,
                true
            )))),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
    }

    #[test]
    fn columns_carry_jdbc_metadata_and_remarks() {
        let spans = tokenledger_engine::schema::SPANS.schema();
        let described = describe_columns("tokenledger", "public", "spans", &spans);
        let field = described.field_with_name("input_tokens").unwrap();
        assert_eq!(field.metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"], "BIGINT");
        assert!(field.metadata()["ARROW:FLIGHT:SQL:REMARKS"].contains("INCLUDING cached"));
        let start = described.field_with_name("start_time").unwrap();
        assert_eq!(start.metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"], "TIMESTAMP");
    }
}
