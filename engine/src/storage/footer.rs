//! Reading a table file's footer without trusting a byte of it.
//!
//! Any bytes can arrive under a table directory, and the Parquet decoder must never see a claim
//! it could trip over. parquet 59.3.2's metadata decoder, for one, panics on a footer whose
//! length field points before the start of the file (`ParquetMetaDataPushDecoder::try_decode`
//! subtracts it from the file length unchecked). So this module:
//! - checks what the last eight bytes claim (the `PAR1` magic, a metadata length that fits in
//!   the file) before decoding, and that every range the decoder asks for lies in the file;
//! - runs each decoding step under `catch_unwind`, so a panic in the decoder becomes a reason
//!   to quarantine the file, not a crashed query;
//! - verifies the checksum tokenledger's writers put over the footer and page indexes
//!   ([`crate::storage::checksum`]).

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::DecodeResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataPushDecoder};

use crate::storage::checksum::{self, FOOTER_TAIL_LEN, footer_length};

/// Magic at the end of a Parquet file with a plain footer.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
/// Magic at the end of a Parquet file whose footer is encrypted.
const ENCRYPTED_MAGIC: &[u8; 4] = b"PARE";
/// The leading magic, the footer length and the trailing magic.
const MIN_FILE_LEN: u64 = 12;
/// Decoding steps (footer, metadata, page indexes) before a decoder is taken to be looping.
const MAX_DECODE_STEPS: usize = 8;

/// Why a file's footer cannot be used. The message says what is wrong, in a user's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFooter(pub String);

/// A footer that passed every check.
#[derive(Debug, Clone)]
pub struct Footer {
    /// The decoded footer and page indexes.
    pub metadata: Arc<ParquetMetaData>,
    /// The whole file, when it is no longer than the size hint: the first read fetched all of
    /// it, so a scan need not fetch it again.
    pub whole_file: Option<Bytes>,
}

/// Reads the footer (and page indexes) of the file `meta` from `store`, reading the last
/// `size_hint` bytes in one request first. The outer error is the store's (the file could not
/// be read: try again later); the inner one says what is wrong with the file's bytes.
pub async fn read_footer(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    size_hint: u64,
) -> object_store::Result<Result<Footer, BadFooter>> {
    let size = meta.size;
    if size < MIN_FILE_LEN {
        return Ok(Err(BadFooter(format!(
            "{size} bytes is too short for a Parquet file (at least {MIN_FILE_LEN})"
        ))));
    }
    let tail_range = size.saturating_sub(size_hint.max(FOOTER_TAIL_LEN))..size;
    let tail = store.get_range(&meta.location, tail_range.clone()).await?;
    if let Err(bad) = check_footer_tail(&tail, size) {
        return Ok(Err(bad));
    }

    let mut decoder = match guarded(|| ParquetMetaDataPushDecoder::try_new(size)) {
        Ok(decoder) => decoder.with_page_index_policy(PageIndexPolicy::Optional),
        Err(bad) => return Ok(Err(bad)),
    };
    let mut have = vec![(tail_range.clone(), tail.clone())];
    if let Err(bad) = guarded(|| decoder.push_ranges(vec![tail_range.clone()], vec![tail.clone()]))
    {
        return Ok(Err(bad));
    }
    let mut metadata = None;
    for _ in 0..MAX_DECODE_STEPS {
        match guarded(|| decoder.try_decode()) {
            Ok(DecodeResult::Data(decoded)) => {
                metadata = Some(decoded);
                break;
            }
            Ok(DecodeResult::NeedsData(ranges)) => {
                if let Some(outside) = ranges.iter().find(|r| r.start > r.end || r.end > size) {
                    return Ok(Err(BadFooter(format!(
                        "the footer points at bytes {outside:?}, outside the {size}-byte file"
                    ))));
                }
                let data = store.get_ranges(&meta.location, &ranges).await?;
                have.extend(ranges.iter().cloned().zip(data.iter().cloned()));
                if let Err(bad) = guarded(|| decoder.push_ranges(ranges, data)) {
                    return Ok(Err(bad));
                }
            }
            Ok(DecodeResult::Finished) => break,
            Err(bad) => return Ok(Err(bad)),
        }
    }
    let Some(metadata) = metadata else {
        return Ok(Err(BadFooter("the footer could not be decoded".into())));
    };

    // The checksum covers everything after the column chunks.
    let tail_start = checksum::data_end(&metadata);
    if tail_start > size {
        return Ok(Err(BadFooter(format!(
            "the footer places column data up to byte {tail_start}, past the end of the \
             {size}-byte file"
        ))));
    }
    let tail = match covering(&have, tail_start..size) {
        Some(bytes) => bytes,
        None => store.get_range(&meta.location, tail_start..size).await?,
    };
    if let Err(problem) = checksum::verify_tail(&metadata, size, &tail) {
        return Ok(Err(BadFooter(problem)));
    }
    Ok(Ok(Footer {
        metadata: Arc::new(metadata),
        whole_file: covering(&have, 0..size),
    }))
}

/// Checks the last eight bytes: the magic, and a metadata length that fits in the file.
fn check_footer_tail(tail: &Bytes, size: u64) -> Result<(), BadFooter> {
    let last8 = &tail[tail.len() - FOOTER_TAIL_LEN as usize..];
    let magic = &last8[4..];
    if magic == ENCRYPTED_MAGIC {
        return Err(BadFooter(
            "encrypted Parquet footers (PARE) are not supported".into(),
        ));
    }
    if magic != PARQUET_MAGIC {
        return Err(BadFooter(format!(
            "does not end in the Parquet magic PAR1 (ends in {:?})",
            String::from_utf8_lossy(magic)
        )));
    }
    let metadata_len = u64::from(footer_length(tail));
    if metadata_len + MIN_FILE_LEN > size {
        return Err(BadFooter(format!(
            "the footer claims {metadata_len} bytes of metadata, but the whole file has \
             {size} bytes"
        )));
    }
    Ok(())
}

/// The bytes of `range` if one of the `have` reads holds all of them.
fn covering(have: &[(Range<u64>, Bytes)], range: Range<u64>) -> Option<Bytes> {
    have.iter()
        .find(|(r, _)| r.start <= range.start && range.end <= r.end)
        .map(|(r, bytes)| {
            bytes.slice((range.start - r.start) as usize..(range.end - r.start) as usize)
        })
}

/// Runs one decoding step; an error or a panic in the decoder becomes the file's problem.
fn guarded<T>(
    step: impl FnOnce() -> Result<T, parquet::errors::ParquetError>,
) -> Result<T, BadFooter> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(BadFooter(e.to_string())),
        Err(panic) => Err(BadFooter(format!(
            "the Parquet decoder failed on it ({})",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}
