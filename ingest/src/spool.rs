//! The spool: every accepted export request, on disk and synced before it is acknowledged.
//!
//! Requests are appended to a segment file as `[length u32][crc32 u32][request bytes]` records.
//! A segment becomes Parquet files named after it, and is deleted only once they are stored, so
//! after a crash each segment left is turned into the same files again: replay overwrites, it
//! never adds a second copy. A record cut short by the crash was never acknowledged (its sync had
//! not returned), and replay stops before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The file name ending of a segment.
const SEGMENT_SUFFIX: &str = ".spool";
/// A record's header: length and checksum.
const HEADER_LEN: usize = 8;
/// The largest record replay accepts (an export request is at most 64 MiB).
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// A segment being written.
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    /// The segment's id: its file name without the suffix, and the name of its Parquet files.
    id: String,
    /// Bytes known to be on disk (synced).
    synced_len: u64,
    len: u64,
}

impl SegmentWriter {
    /// Creates the segment `id` in `dir`, durably (the directory entry is synced too).
    pub fn create(dir: &Path, id: &str) -> io::Result<Self> {
        let path = dir.join(format!("{id}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(dir)?;
        Ok(SegmentWriter {
            file,
            path,
            id: id.to_string(),
            synced_len: 0,
            len: 0,
        })
    }

    /// The segment's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one request (not yet durable: see [`SegmentWriter::sync`]).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let length = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request over 4 GiB"))?;
        // Header and payload written apart: a request is not copied to be spooled.
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&length.to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.file.write_all(&header)?;
        self.file.write_all(payload)?;
        self.len += (HEADER_LEN + payload.len()) as u64;
        Ok(())
    }

    /// Makes everything appended so far durable. On failure the file is cut back to what was
    /// last synced, so requests that were not acknowledged do not come back at replay.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.file.sync_data() {
            Ok(()) => {
                self.synced_len = self.len;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.synced_len);
                self.len = self.synced_len;
                Err(e)
            }
        }
    }

    /// Forgets records appended since the last sync (their write failed).
    pub fn discard_unsynced(&mut self) {
        let _ = self.file.set_len(self.synced_len);
        self.len = self.synced_len;
    }
}

/// The segments in `dir`, oldest first (ids start with their creation time), as (id, path).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(SEGMENT_SUFFIX) {
            segments.push((id.to_string(), entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The requests in a segment file, up to the first record that is cut short or fails its
/// checksum (the tail of a write the crash interrupted).
pub fn read_segment(path: &Path) -> io::Result<Vec<Bytes>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= HEADER_LEN {
        let length = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + HEADER_LEN;
        if length > MAX_RECORD || data.len() - start < length {
            break;
        }
        let payload = &data[start..start + length];
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(Bytes::copy_from_slice(payload));
        at = start + length;
    }
    if at < data.len() {
        tracing::warn!(
            segment = %path.display(),
            ignored_bytes = data.len() - at,
            "spool segment ends in an incomplete record (never acknowledged); ignored"
        );
    }
    Ok(records)
}

/// Deletes a segment whose files are stored.
pub fn remove_segment(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Syncs a directory, so a file created or removed in it stays so after a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), "0001-a").unwrap();
        writer.append(b"first").unwrap();
        writer.append(b"").unwrap();
        writer.append(b"third request").unwrap();
        writer.sync().unwrap();
        let path = writer.path().to_path_buf();
        let full = std::fs::read(&path).unwrap();
        assert_eq!(
            read_segment(&path).unwrap(),
            vec![
                Bytes::from_static(b"first"),
                Bytes::new(),
                Bytes::from_static(b"third request")
            ]
        );
        // Every cut inside the last record leaves the first two.
        let last_start = full.len() - (HEADER_LEN + 13);
        for cut in last_start..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(read_segment(&path).unwrap().len(), 2, "cut at {cut}");
        }
        // A flipped byte in the last payload fails its checksum.
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read_segment(&path).unwrap().len(), 2);
        assert_eq!(list_segments(dir.path()).unwrap()[0].0, "0001-a");
        remove_segment(&path).unwrap();
        assert!(list_segments(dir.path()).unwrap().is_empty());
    }
}
