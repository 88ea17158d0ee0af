//! Parquet writers: how tokenledger lays out the files it writes (generator, importers), each
//! with page and footer checksums ([`crate::storage::checksum`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::Result;
use crate::storage::checksum;

/// Rows per row group: small enough that min/max statistics on a sorted column prune well,
/// large enough that a scan reads long runs.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Random identifiers: dictionary encoding never pays off on them (every value is new), and
/// min/max statistics over random hex prune nothing.
const RANDOM_ID_COLUMNS: [&str; 3] = ["trace_id", "span_id", "parent_span_id"];

/// Writer settings for trace tables: zstd, page-level statistics (column and offset indexes, so
/// readers can skip pages as well as row groups), and the sort order recorded in the footer.
pub fn writer_properties(schema: &SchemaRef, sorted_by: &[&str]) -> WriterProperties {
    let sorting: Vec<SortingColumn> = sorted_by
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .map(|idx| SortingColumn {
            column_idx: idx as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("zstd level 1 is valid"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting));
    for column in RANDOM_ID_COLUMNS
        .iter()
        .filter(|c| schema.index_of(c).is_ok())
    {
        let path = ColumnPath::from(*column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    builder.build()
}

/// [`writer_properties`] for a `spans` file whose writer checked every row against the
/// validation policy: the footer says so ([`crate::integrity::VALUES_CHECKED_KEY`]), and readers
/// do not check its rows again.
pub fn checked_spans_properties(schema: &SchemaRef, sorted_by: &[&str]) -> WriterProperties {
    writer_properties(schema, sorted_by)
        .into_builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            crate::integrity::VALUES_CHECKED_KEY.to_string(),
            crate::integrity::POLICY_VERSION.to_string(),
        )]))
        .build()
}

/// A Parquet file built in memory, batch by batch, and finished with its checksums
/// ([`checksum::seal`]). Synchronous: CPU-bound writers (the generator) build files on blocking
/// threads and store them with [`put_file`].
pub struct ParquetFileBuilder {
    writer: ArrowWriter<Vec<u8>>,
    props: Arc<WriterProperties>,
}

impl ParquetFileBuilder {
    /// Starts a file of `schema` rows.
    pub fn new(schema: &SchemaRef, props: WriterProperties) -> Result<Self> {
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(props.clone()))?;
        Ok(ParquetFileBuilder {
            writer,
            props: Arc::new(props),
        })
    }

    /// Appends a batch (encoded into row groups as they fill).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        Ok(())
    }

    /// The finished file with its checksums.
    pub fn finish(self) -> Result<Bytes> {
        seal_file(self.writer, &self.props)
    }
}

/// Stores a finished file with one PUT: a local file appears by rename, an S3 object when the
/// upload completes, so readers never see half a file.
pub async fn put_file(store: &dyn ObjectStore, path: &Path, file: Bytes) -> Result<()> {
    store.put(path, file.into()).await?;
    Ok(())
}

/// One Parquet file being written batch by batch to an object store (local disk or S3): a
/// [`ParquetFileBuilder`] stored by [`StreamingParquetFile::close`].
pub struct StreamingParquetFile {
    file: ParquetFileBuilder,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl StreamingParquetFile {
    /// Starts a file of `schema` rows at `path`.
    pub fn create(
        store: Arc<dyn ObjectStore>,
        path: Path,
        schema: &SchemaRef,
        props: WriterProperties,
    ) -> Result<Self> {
        Ok(StreamingParquetFile {
            file: ParquetFileBuilder::new(schema, props)?,
            store,
            path,
        })
    }

    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.file.write(batch)
    }

    /// Finishes the file, adds its checksums and stores it; readers see it only after this.
    pub async fn close(self) -> Result<()> {
        put_file(self.store.as_ref(), &self.path, self.file.finish()?).await
    }
}

/// Closes `writer` (built with `props`) and returns the finished file with its checksums.
pub fn seal_file(writer: ArrowWriter<Vec<u8>>, props: &Arc<WriterProperties>) -> Result<Bytes> {
    let file = Bytes::from(writer.into_inner()?);
    Ok(checksum::seal(&file, props)?)
}
