//! Property tests of the footer check: whatever the bytes, it returns a verdict and never
//! panics; and on a file tokenledger wrote, a footer it accepts is exactly the one written
//! (the checksum over the footer and page indexes leaves no edit there unnoticed).
//!
//! 256 cases per property in CI; `PROPTEST_CASES=100000 cargo test -p tokenledger-engine
//! --test it footer::` runs them longer.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaData;
use proptest::prelude::*;
use tokenledger_engine::storage::footer::{BadFooter, Footer, read_footer};

/// A spans file as the generator writes it (page and footer checksums included).
static SEALED: LazyLock<Bytes> = LazyLock::new(|| {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = tokenledger_gen::GenOptions {
            work_items: 60,
            ..Default::default()
        };
        crate::support::gen_into(dir.path(), &options).await;
        Bytes::from(std::fs::read(dir.path().join("spans/invoice/part-00000.parquet")).unwrap())
    })
});

/// What the footer check makes of `bytes`, stored under a table directory.
fn footer_of(bytes: &[u8], size_hint: u64) -> Result<Footer, BadFooter> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = InMemory::new();
        let path = Path::from("spans/x.parquet");
        store.put(&path, bytes.to_vec().into()).await.unwrap();
        let meta: ObjectMeta = store.head(&path).await.unwrap();
        read_footer(&store, &meta, size_hint).await.unwrap()
    })
}

/// The footer check's verdict on `bytes`: the decoded footer, or why the file is refused.
fn verdict(bytes: &[u8], size_hint: u64) -> Result<Arc<ParquetMetaData>, BadFooter> {
    footer_of(bytes, size_hint).map(|footer| footer.metadata)
}

#[test]
fn a_file_no_longer_than_the_first_read_comes_back_whole() {
    let whole_file = |size_hint: u64| footer_of(&SEALED, size_hint).unwrap().whole_file;
    let size = SEALED.len() as u64;
    assert_eq!(whole_file(size).as_ref(), Some(&*SEALED));
    assert_eq!(whole_file(size + 1000).as_ref(), Some(&*SEALED));
    // A shorter first read fetched only the tail (and page indexes): nothing to keep.
    assert_eq!(whole_file(size - 1), None);
}

/// What a footer says that answers depend on.
fn summary(metadata: &ParquetMetaData) -> String {
    format!(
        "{:?} {:?} {:?} {:?}",
        metadata.file_metadata().num_rows(),
        metadata.row_groups(),
        metadata.column_index(),
        metadata.offset_index()
    )
}

/// Edits of a file: overwrite bytes, cut it short, or rewrite the footer length.
#[derive(Debug, Clone)]
enum Edit {
    Bytes(Vec<(prop::sample::Index, u8)>),
    Tail(Vec<(prop::sample::Index, u8)>),
    Truncate(prop::sample::Index),
    FooterLength(u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4);
    prop_oneof![
        bytes.clone().prop_map(Edit::Bytes),
        bytes.prop_map(Edit::Tail),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        any::<u32>().prop_map(Edit::FooterLength),
    ]
}

/// Applies `edit` to `file`; `Tail` edits land in the last 6 KiB (footer and page indexes).
fn apply(file: &[u8], edit: &Edit) -> Vec<u8> {
    let mut bytes = file.to_vec();
    let len = bytes.len();
    match edit {
        Edit::Bytes(edits) => {
            for (at, value) in edits {
                bytes[at.index(len)] = *value;
            }
        }
        Edit::Tail(edits) => {
            let tail = len.min(6 * 1024);
            for (at, value) in edits {
                bytes[len - tail + at.index(tail)] = *value;
            }
        }
        Edit::Truncate(at) => bytes.truncate(at.index(len)),
        Edit::FooterLength(value) => bytes[len - 8..len - 4].copy_from_slice(&value.to_le_bytes()),
    }
    bytes
}

proptest! {
    #[test]
    fn any_bytes_get_a_verdict(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        footer_length in any::<u32>(),
        hint in 8u64..1024,
    ) {
        // Arbitrary bytes, and the same ending in a footer length and the Parquet magic.
        let _ = verdict(&bytes, hint);
        let mut claimed = bytes.clone();
        claimed.extend_from_slice(&footer_length.to_le_bytes());
        claimed.extend_from_slice(b"PAR1");
        let _ = verdict(&claimed, hint);
    }

    #[test]
    fn an_edited_file_is_refused_or_its_footer_is_unchanged(edit in edit(), small_hint in any::<bool>()) {
        let original = verdict(&SEALED, 64 * 1024).expect("the generated file passes");
        let edited = apply(&SEALED, &edit);
        // A small hint makes the check fetch the metadata and page indexes separately.
        let hint = if small_hint { 64 } else { 64 * 1024 };
        if let Ok(accepted) = verdict(&edited, hint) {
            prop_assert_eq!(summary(&accepted), summary(&original));
        }
    }
}

#[test]
fn the_36_bytes_of_issue_12_are_refused_with_the_reason() {
    let bad = verdict(b"PAR1 this is not parquet at all PAR1", 64 * 1024).unwrap_err();
    assert_eq!(
        bad.0,
        "the footer claims 543976545 bytes of metadata, but the whole file has 36 bytes"
    );
}

#[test]
fn a_lost_checksum_record_is_noticed() {
    // Remove the 12-byte record in front of the footer and fix up nothing else: the footer
    // still decodes, but it says the record should be there.
    let file = &SEALED[..];
    let footer_len = u32::from_le_bytes(file[file.len() - 8..file.len() - 4].try_into().unwrap());
    let footer_start = file.len() - 8 - footer_len as usize;
    let mut without = file[..footer_start - 12].to_vec();
    without.extend_from_slice(&file[footer_start..]);
    let bad = verdict(&without, 64 * 1024).unwrap_err();
    assert_eq!(
        bad.0,
        "the footer declares checksums but its checksum record is missing"
    );
}
