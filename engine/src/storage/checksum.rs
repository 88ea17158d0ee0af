//! Checksums in the Parquet files tokenledger writes, so corrupted bytes fail a read instead of
//! changing an answer.
//!
//! - **Pages.** A Parquet page header has a `crc` field: the CRC-32 of the page's bytes as
//!   stored. Readers built with the `parquet` crate's `crc` feature (ours) verify it wherever it
//!   is set, but the crate's writer never sets it (parquet 59 and 60: "TODO: Add support for crc
//!   checksum"). [`seal`] sets it: it takes a finished file, adds the CRC to every page header
//!   and reassembles the file with parquet's own writer (`append_column`), so offsets, page
//!   indexes and statistics are still laid out by parquet.
//! - **Footer and page indexes.** Page CRCs leave these out, yet a flipped bit there can change
//!   an answer without failing any read: a row count, or a min/max that prunes a row group or
//!   answers `max(x)` from statistics. So [`seal`] also writes a *tail record* just before the
//!   footer, with a CRC-32 of the page indexes and the footer. Nothing in the file points at
//!   those 12 bytes, so other Parquet readers skip them. [`verify_tail`] checks the record
//!   whenever a footer is read. The footer also names the checksums it should find
//!   ([`CHECKSUMS_KEY`]), so a lost tail record is caught too.
//!
//! Files written by other tools have neither, and read as before.

use bytes::{Bytes, BytesMut};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::properties::WriterPropertiesPtr;
use parquet::file::writer::SerializedFileWriter;

/// Footer key naming the checksums a file carries; its value is [`CHECKSUMS_VALUE`].
pub const CHECKSUMS_KEY: &str = "tokenledger.checksums";
/// See [`CHECKSUMS_KEY`].
pub const CHECKSUMS_VALUE: &str = "page-crc32,tail-crc32";
/// Marks the tail record (its last four bytes).
const TAIL_MAGIC: &[u8; 4] = b"TLck";
/// The tail record: length of the page-index region (u32 LE), CRC-32 (u32 LE), [`TAIL_MAGIC`].
const TAIL_RECORD_LEN: u64 = 12;
/// A Parquet file ends with the footer length (u32 LE) and its magic.
pub(crate) const FOOTER_TAIL_LEN: u64 = 8;

/// Thrift compact protocol: the type id of an i32 field, and the short field header
/// (`delta << 4 | type`) of a field whose id is one more than the previous one.
const THRIFT_I32: u8 = 5;
const SHORT_I32_HEADER_DELTA_1: u8 = 0x10 | THRIFT_I32;
/// `PageHeader` field 4 is the page CRC.
const PAGE_HEADER_CRC_FIELD: u8 = 4;

/// Adds page CRCs and the tail record to `file`, a complete Parquet file written with `props`
/// (the same properties: they carry the row groups' sort order). Whole-file, in memory: writers
/// buffer a file anyway before it becomes visible.
pub fn seal(file: &Bytes, props: &WriterPropertiesPtr) -> Result<Bytes, ParquetError> {
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(file)?;
    let file_metadata = metadata.file_metadata();
    let mut writer = SerializedFileWriter::new(
        Vec::with_capacity(file.len() + 4096),
        file_metadata.schema_descr().root_schema_ptr(),
        props.clone(),
    )?;
    for kv in file_metadata.key_value_metadata().into_iter().flatten() {
        if kv.key != CHECKSUMS_KEY {
            writer.append_key_value_metadata(kv.clone());
        }
    }
    writer.append_key_value_metadata(KeyValue::new(
        CHECKSUMS_KEY.to_string(),
        CHECKSUMS_VALUE.to_string(),
    ));

    let offset_index = metadata
        .offset_index()
        .ok_or_else(|| ParquetError::General("seal: file has no offset index".into()))?;
    for (rg, row_group) in metadata.row_groups().iter().enumerate() {
        let mut row_group_writer = writer.next_row_group()?;
        for (col, column) in row_group.columns().iter().enumerate() {
            let column_index = metadata
                .column_index()
                .and_then(|index| index.get(rg)?.get(col))
                .filter(|index| !matches!(index, ColumnIndexMetaData::NONE))
                .cloned();
            let (chunk, close) = stamp_chunk(
                file,
                column,
                &offset_index[rg][col],
                column_index,
                row_group.num_rows(),
            )?;
            row_group_writer.append_column(&chunk, close)?;
        }
        row_group_writer.close()?;
    }
    let written = writer.finish()?;
    let body = Bytes::from(std::mem::take(writer.inner_mut()));
    insert_tail_record(&body, &written)
}

/// One column chunk of `file` with a CRC in every page header, addressed from 0, and what
/// `append_column` needs to know about it.
fn stamp_chunk(
    file: &Bytes,
    column: &ColumnChunkMetaData,
    offset_index: &OffsetIndexMetaData,
    column_index: Option<ColumnIndexMetaData>,
    rows: i64,
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    // Pages in file order: the dictionary page (not in the offset index) runs up to the first
    // data page; the offset index gives each data page's offset and size, header included.
    let mut pages: Vec<(i64, i64)> = Vec::with_capacity(offset_index.page_locations.len() + 1);
    if let Some(dictionary) = column.dictionary_page_offset() {
        pages.push((dictionary, column.data_page_offset() - dictionary));
    }
    pages.extend(
        offset_index
            .page_locations
            .iter()
            .map(|page| (page.offset, i64::from(page.compressed_page_size))),
    );
    let covered: i64 = pages.iter().map(|(_, size)| size).sum();
    if covered != column.compressed_size() {
        return Err(ParquetError::General(format!(
            "seal: pages of column {} cover {covered} bytes, the chunk has {}",
            column.column_path(),
            column.compressed_size()
        )));
    }

    let mut chunk = BytesMut::with_capacity(column.compressed_size() as usize + 8 * pages.len());
    let mut locations = Vec::with_capacity(offset_index.page_locations.len());
    let data_pages_from = pages.len() - offset_index.page_locations.len();
    for (i, &(offset, size)) in pages.iter().enumerate() {
        let page = slice(file, offset, size)?;
        let new_offset = chunk.len() as i64;
        stamp_page(&page, &mut chunk)?;
        if i >= data_pages_from {
            let location = &offset_index.page_locations[i - data_pages_from];
            locations.push(PageLocation {
                offset: new_offset,
                compressed_page_size: (chunk.len() as i64 - new_offset) as i32,
                first_row_index: location.first_row_index,
            });
        }
    }
    let added = chunk.len() as i64 - column.compressed_size();
    let first_data_page = locations.first().map_or(0, |page| page.offset);
    let metadata = column
        .clone()
        .into_builder()
        .set_total_compressed_size(chunk.len() as i64)
        .set_total_uncompressed_size(column.uncompressed_size() + added)
        .set_dictionary_page_offset(column.dictionary_page_offset().map(|_| 0))
        .set_data_page_offset(first_data_page)
        .set_column_index_offset(None)
        .set_column_index_length(None)
        .set_offset_index_offset(None)
        .set_offset_index_length(None)
        .build()?;
    let close = ColumnCloseResult {
        bytes_written: chunk.len() as u64,
        rows_written: rows as u64,
        metadata,
        bloom_filter: None,
        column_index,
        offset_index: Some(OffsetIndexMetaData {
            page_locations: locations,
            unencoded_byte_array_data_bytes: offset_index.unencoded_byte_array_data_bytes.clone(),
        }),
    };
    Ok((chunk.freeze(), close))
}

/// Appends `page` (header and data) to `out` with the page's CRC-32 in its header.
///
/// parquet writes a page header's fields in id order, the first three as short-form i32s
/// (type, uncompressed size, compressed size). The CRC is field 4, so it goes right after them,
/// and the next field's header, which stores its id as a delta from the previous one, gets a
/// delta one smaller.
fn stamp_page(page: &[u8], out: &mut BytesMut) -> Result<(), ParquetError> {
    let bad = |what: &str| ParquetError::General(format!("seal: unexpected page header: {what}"));
    let mut pos = 0;
    let mut compressed_size = 0;
    for _ in 0..3 {
        if page.get(pos) != Some(&SHORT_I32_HEADER_DELTA_1) {
            return Err(bad("the first fields are not consecutive i32s"));
        }
        let (value, len) = read_varint(&page[pos + 1..]).ok_or_else(|| bad("truncated varint"))?;
        compressed_size = zigzag_decode(value);
        pos += 1 + len;
    }
    let next = *page
        .get(pos)
        .ok_or_else(|| bad("ends after three fields"))?;
    if next == SHORT_I32_HEADER_DELTA_1 {
        // Field 4 is already there: the writer set a CRC itself.
        out.extend_from_slice(page);
        return Ok(());
    }
    let header_len = page
        .len()
        .checked_sub(usize::try_from(compressed_size).map_err(|_| bad("negative size"))?)
        .filter(|&len| len > pos)
        .ok_or_else(|| bad("compressed size larger than the page"))?;
    let crc = crc32fast::hash(&page[header_len..]);
    out.extend_from_slice(&page[..pos]);
    out.extend_from_slice(&[SHORT_I32_HEADER_DELTA_1]);
    write_varint(zigzag_encode(crc as i32), out);
    let delta = next >> 4;
    if delta > 0 {
        // Short form: the delta was counted from field 3; it is now counted from field 4.
        let new_delta = delta
            .checked_sub(PAGE_HEADER_CRC_FIELD - 3)
            .filter(|d| *d > 0)
            .ok_or_else(|| bad("a field numbered 4 or less follows the sizes"))?;
        out.extend_from_slice(&[(new_delta << 4) | (next & 0x0f)]);
        out.extend_from_slice(&page[pos + 1..]);
    } else {
        // Long form (absolute field id) or the end of the struct: nothing to renumber.
        out.extend_from_slice(&page[pos..]);
    }
    Ok(())
}

/// The bytes `[offset, offset + len)` of `file`, or an error if they are not all there.
fn slice(file: &Bytes, offset: i64, len: i64) -> Result<Bytes, ParquetError> {
    let start = usize::try_from(offset).ok();
    let end = start.zip(usize::try_from(len).ok()).map(|(s, l)| s + l);
    match (start, end) {
        (Some(start), Some(end)) if end <= file.len() => Ok(file.slice(start..end)),
        _ => Err(ParquetError::General(format!(
            "seal: page at {offset}+{len} lies outside the {}-byte file",
            file.len()
        ))),
    }
}

/// Where the column chunks end: page indexes (if any) and the footer follow.
pub fn data_end(metadata: &ParquetMetaData) -> u64 {
    metadata
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns())
        .map(|c| {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            u64::try_from(start.saturating_add(c.compressed_size())).unwrap_or(u64::MAX)
        })
        .max()
        .unwrap_or(4)
}

/// `body` with the tail record inserted before its footer.
fn insert_tail_record(body: &Bytes, metadata: &ParquetMetaData) -> Result<Bytes, ParquetError> {
    let size = body.len() as u64;
    let footer_start = size - FOOTER_TAIL_LEN - u64::from(footer_length(body));
    let data_end = data_end(metadata);
    let (Some(region), Some(footer)) = (
        body.get(data_end as usize..footer_start as usize),
        body.get(footer_start as usize..),
    ) else {
        return Err(ParquetError::General(
            "seal: column chunks overlap the footer".into(),
        ));
    };
    let mut sealed = BytesMut::with_capacity(body.len() + TAIL_RECORD_LEN as usize);
    sealed.extend_from_slice(&body[..footer_start as usize]);
    sealed.extend_from_slice(&(region.len() as u32).to_le_bytes());
    sealed.extend_from_slice(&tail_crc(region, footer).to_le_bytes());
    sealed.extend_from_slice(TAIL_MAGIC);
    sealed.extend_from_slice(footer);
    Ok(sealed.freeze())
}

/// The footer length stored in a Parquet file's last eight bytes (`body` has at least eight).
pub(crate) fn footer_length(body: &[u8]) -> u32 {
    let at = body.len() - FOOTER_TAIL_LEN as usize;
    u32::from_le_bytes(body[at..at + 4].try_into().expect("four bytes"))
}

fn tail_crc(region: &[u8], footer: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(region);
    hasher.update(footer);
    hasher.finalize()
}

/// Whether the footer says the file carries tokenledger's checksums.
fn declares_checksums(metadata: &ParquetMetaData) -> bool {
    metadata
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|kv| kv.key == CHECKSUMS_KEY))
}

/// Checks the tail record of a file of `size` bytes whose footer decoded to `metadata`; `tail`
/// holds the file's bytes from [`data_end`] (or earlier) to the end. A file with no tail record
/// that does not claim one (written by another tool) passes. `Err`: what is wrong.
pub fn verify_tail(metadata: &ParquetMetaData, size: u64, tail: &[u8]) -> Result<(), String> {
    let tail_start = size.saturating_sub(tail.len() as u64);
    let footer_start = (tail.len() as u64 >= FOOTER_TAIL_LEN)
        .then(|| size.checked_sub(FOOTER_TAIL_LEN + u64::from(footer_length(tail))))
        .flatten()
        .ok_or("the footer does not fit in the file")?;
    let record_start = footer_start.checked_sub(TAIL_RECORD_LEN);
    let record = record_start
        .filter(|start| *start >= tail_start)
        .map(|start| &tail[(start - tail_start) as usize..(footer_start - tail_start) as usize]);
    let record = match record {
        Some(record) if &record[8..] == TAIL_MAGIC => record,
        _ if declares_checksums(metadata) => {
            return Err("the footer declares checksums but its checksum record is missing".into());
        }
        _ => return Ok(()),
    };
    let record_start = record_start.expect("found above");
    let region_len = u64::from(u32::from_le_bytes(record[..4].try_into().expect("4 bytes")));
    let stored = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
    let data_end = data_end(metadata);
    if data_end.checked_add(region_len) != Some(record_start) || data_end < tail_start {
        return Err(format!(
            "checksum record covers {region_len} bytes, but the page indexes between the data \
             (ending at {data_end}) and the record (at {record_start}) differ"
        ));
    }
    let region = &tail[(data_end - tail_start) as usize..(record_start - tail_start) as usize];
    let footer = &tail[(footer_start - tail_start) as usize..];
    let actual = tail_crc(region, footer);
    if actual != stored {
        return Err(format!(
            "footer or page index checksum mismatch (stored {stored:08x}, computed {actual:08x}): \
             the file is corrupt"
        ));
    }
    Ok(())
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_varint(mut value: u64, out: &mut BytesMut) {
    while value >= 0x80 {
        out.extend_from_slice(&[(value as u8 & 0x7f) | 0x80]);
        value >>= 7;
    }
    out.extend_from_slice(&[value as u8]);
}

fn zigzag_decode(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn zigzag_encode(value: i32) -> u64 {
    u64::from(((value << 1) ^ (value >> 31)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips() {
        for v in [0, 1, -1, 63, -64, i32::MAX, i32::MIN] {
            let mut out = BytesMut::new();
            write_varint(zigzag_encode(v), &mut out);
            let (raw, len) = read_varint(&out).unwrap();
            assert_eq!(len, out.len());
            assert_eq!(zigzag_decode(raw), i64::from(v));
        }
    }
}
