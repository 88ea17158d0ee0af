//! Damaged files, as storage and pipelines really damage them: mutants of real generated spans
//! files (bit flips, footer edits, truncations, zeroed blocks) dropped one at a time beside good
//! files, on local disk and on the S3 server. Whatever the bytes, no query panics and no answer
//! is silently different. Each answer either leaves the mutant out (the good files' exact
//! totals), or reads it whole (the totals with the mutant's original rows), or is an error that
//! names the mutant, after which it is quarantined. Expected values come from reading the intact
//! originals with the parquet crate's own reader, not through DataFusion or the session.
//!
//! The seed is fixed; a failure names the mutant, kind and seed, so it reproduces exactly.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{max, min};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokenledger_engine::{Access, DataLocation, EngineError, SessionOptions, TraceSession};
use tokenledger_gen::{GenOptions, Rng};

use crate::flight_clients::ServeProcess;
use crate::peers::S3Server;

/// Fixed so a failing mutant reproduces: mutant `i` is drawn from stream `i` of this seed.
const SEED: u64 = 0x0bad_f11e;
/// Every row and column of the table: any changed value changes the fingerprint.
const ALL_ROWS: &str = "SELECT * FROM spans";
/// Aggregates DataFusion may answer from footer statistics without reading a page.
const FROM_STATISTICS: &str = "SELECT count(*), min(start_time), max(start_time), \
     min(input_tokens), max(output_tokens) FROM spans";
/// Where mutants go: beside the good files, in their own folder.
const MUTANT_DIR: &str = "zz_mutants";

/// What a table's rows add up to: the count and an order-independent sum of row hashes (each
/// row hashed from every column's displayed value, so doubles are compared bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    rows: usize,
    hash_sum: u64,
}

impl Fingerprint {
    fn of(batches: &[RecordBatch]) -> Fingerprint {
        let options = FormatOptions::default().with_null("∅");
        let mut total = Fingerprint {
            rows: 0,
            hash_sum: 0,
        };
        for batch in batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let mut hasher = std::hash::DefaultHasher::new();
                for formatter in &formatters {
                    formatter.value(row).to_string().hash(&mut hasher);
                }
                total.rows += 1;
                total.hash_sum = total.hash_sum.wrapping_add(hasher.finish());
            }
        }
        total
    }

    fn plus(self, other: Fingerprint) -> Fingerprint {
        Fingerprint {
            rows: self.rows + other.rows,
            hash_sum: self.hash_sum.wrapping_add(other.hash_sum),
        }
    }
}

/// What [`FROM_STATISTICS`] answers, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extremes {
    rows: i64,
    start: (i64, i64),
    min_input: Option<i64>,
    max_output: Option<i64>,
}

impl Extremes {
    fn of(batches: &[RecordBatch]) -> Extremes {
        let mut e = Extremes {
            rows: 0,
            start: (i64::MAX, i64::MIN),
            min_input: None,
            max_output: None,
        };
        for b in batches {
            let column = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
            let start = column("start_time");
            let start = start.as_primitive::<TimestampMicrosecondType>();
            e.rows += b.num_rows() as i64;
            if let (Some(lo), Some(hi)) = (min(start), max(start)) {
                e.start = (e.start.0.min(lo), e.start.1.max(hi));
            }
            let input = min(column("input_tokens").as_primitive::<Int64Type>());
            let output = max(column("output_tokens").as_primitive::<Int64Type>());
            e.min_input = [e.min_input, input].into_iter().flatten().min();
            e.max_output = [e.max_output, output].into_iter().flatten().max();
        }
        e
    }

    fn plus(&self, other: &Extremes) -> Extremes {
        Extremes {
            rows: self.rows + other.rows,
            start: (
                self.start.0.min(other.start.0),
                self.start.1.max(other.start.1),
            ),
            min_input: [self.min_input, other.min_input]
                .into_iter()
                .flatten()
                .min(),
            max_output: [self.max_output, other.max_output]
                .into_iter()
                .flatten()
                .max(),
        }
    }

    fn from_answer(batch: &RecordBatch) -> Extremes {
        let int = |i: usize| {
            let c = batch.column(i).as_primitive::<Int64Type>();
            c.is_valid(0).then(|| c.value(0))
        };
        let ts = |i: usize| {
            batch
                .column(i)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0)
        };
        Extremes {
            rows: int(0).unwrap(),
            start: (ts(1), ts(2)),
            min_input: int(3),
            max_output: int(4),
        }
    }
}

/// Reads a whole Parquet file with the parquet crate (no DataFusion, no session).
fn read_directly(bytes: &Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How a mutant was made.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// One bit anywhere.
    BitFlip,
    /// One bit in the footer, page indexes or last column chunk (the last 8 KiB).
    TailBitFlip,
    /// The footer length field overwritten (often pointing outside the file).
    FooterLength,
    /// Cut short.
    Truncate,
    /// A block of 1..4096 bytes zeroed.
    ZeroBlock,
    /// A byte of either magic changed.
    Magic,
}

fn mutate(original: &[u8], rng: &mut Rng) -> (Mutation, Vec<u8>) {
    let kinds = [
        (Mutation::BitFlip, 0.35),
        (Mutation::TailBitFlip, 0.20),
        (Mutation::FooterLength, 0.10),
        (Mutation::Truncate, 0.15),
        (Mutation::ZeroBlock, 0.15),
        (Mutation::Magic, 0.05),
    ];
    let kind = kinds[rng.pick(&kinds.map(|(_, w)| w))].0;
    let mut bytes = original.to_vec();
    let len = bytes.len() as i64;
    match kind {
        Mutation::BitFlip => {
            let at = rng.int(0, len - 1) as usize;
            bytes[at] ^= 1 << rng.int(0, 7);
        }
        Mutation::TailBitFlip => {
            let at = rng.int((len - 8192).max(0), len - 1) as usize;
            bytes[at] ^= 1 << rng.int(0, 7);
        }
        Mutation::FooterLength => {
            let stored = u32::from_le_bytes(
                bytes[len as usize - 8..len as usize - 4]
                    .try_into()
                    .unwrap(),
            );
            let value = match rng.int(0, 3) {
                0 => rng.next_u64() as u32,
                1 => stored.wrapping_add(rng.int(1, 64) as u32),
                2 => stored.wrapping_sub(rng.int(1, 64) as u32),
                _ => u32::MAX,
            };
            bytes[len as usize - 8..len as usize - 4].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::Truncate => bytes.truncate(rng.int(1, len - 1) as usize),
        Mutation::ZeroBlock => {
            let at = rng.int(0, len - 1) as usize;
            let end = (at + rng.int(1, 4096) as usize).min(bytes.len());
            bytes[at..end].fill(0);
        }
        Mutation::Magic => {
            let at = if rng.chance(0.5) {
                rng.int(0, 3)
            } else {
                rng.int(len - 4, len - 1)
            } as usize;
            bytes[at] = bytes[at].wrapping_add(rng.int(1, 255) as u8);
        }
    }
    (kind, bytes)
}

/// A data location holding generated tables, the spans files' bytes and what they hold.
struct Lake {
    location: DataLocation,
    store: Arc<dyn ObjectStore>,
    s3: Vec<(String, String)>,
    /// The spans files (path, bytes, rows, extremes).
    spans: Vec<(Path, Bytes, Fingerprint, Extremes)>,
}

impl Lake {
    /// Generates a small data set at `location`; with `sealed` false, rewrites its spans files
    /// as a plain Parquet writer would (no checksums), standing in for another tool's files.
    async fn generate(location: &str, s3: Vec<(String, String)>, sealed: bool) -> Lake {
        let location = DataLocation::parse(location).unwrap();
        let store = location.open_store(&s3).unwrap();
        let options = GenOptions {
            work_items: 240,
            ..GenOptions::default()
        };
        tokenledger_gen::generate(
            Arc::clone(&store),
            &location,
            &options,
            tokenledger_gen::silent(),
        )
        .await
        .unwrap();
        let mut spans = Vec::new();
        let listed: Vec<_> = store
            .list(Some(&location.table_dir("spans")))
            .map(|m| m.unwrap().location)
            .collect::<Vec<_>>()
            .await;
        for path in listed {
            let mut bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
            let batches = read_directly(&bytes);
            if !sealed {
                bytes = plain_parquet(&batches);
                store.put(&path, bytes.clone().into()).await.unwrap();
            }
            let (fingerprint, extremes) = (Fingerprint::of(&batches), Extremes::of(&batches));
            spans.push((path, bytes, fingerprint, extremes));
        }
        spans.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(spans.len(), 4, "one spans file per workflow");
        Lake {
            location,
            store,
            s3,
            spans,
        }
    }

    fn good_totals(&self) -> (Fingerprint, Extremes) {
        let mut totals = (
            Fingerprint {
                rows: 0,
                hash_sum: 0,
            },
            Extremes::of(&[]),
        );
        for (_, _, fingerprint, extremes) in &self.spans {
            totals = (totals.0.plus(*fingerprint), totals.1.plus(extremes));
        }
        totals
    }

    async fn open(&self, strict: bool) -> TraceSession {
        let options = SessionOptions {
            s3: self.s3.clone(),
            strict,
            ..SessionOptions::default()
        };
        TraceSession::open(self.location.clone(), &options)
            .await
            .unwrap()
    }
}

/// Writes `batches` with parquet's default writer: no page checksums, no checksum record.
fn plain_parquet(batches: &[RecordBatch]) -> Bytes {
    let mut writer = ArrowWriter::try_new(Vec::new(), batches[0].schema(), None).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    Bytes::from(writer.into_inner().unwrap())
}

/// Runs `sql` the way the CLI and the Flight server do, and collects the answer.
async fn run(session: &TraceSession, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let answer = async {
        let frame = session.plan_sql(sql, Access::ReadWrite).await?;
        let stream = session.execute(frame).await?;
        Ok::<_, EngineError>(datafusion::physical_plan::common::collect(stream).await?)
    };
    answer.await.map_err(|e| e.user_message())
}

/// Whether `tokenledger_files` lists the file named `name` as quarantined.
async fn is_quarantined(session: &TraceSession, name: &str) -> bool {
    let sql = format!("SELECT status FROM tokenledger_files WHERE path LIKE '%/{name}'");
    let listing = run(session, &sql).await.unwrap();
    let statuses: Vec<&str> = listing
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
        .collect();
    statuses == ["quarantined"]
}

/// What happened to the mutants of one run.
#[derive(Debug, Default)]
struct Outcomes {
    /// Left out by the footer check.
    quarantined_at_listing: usize,
    /// Read whole and answered like the original (the damage missed every byte that counts).
    intact: usize,
    /// Failed a query with an error naming the mutant, then left out.
    failed_naming_the_file: usize,
    /// Of those, how many were a decoder panic caught and turned into the error.
    panics_contained: usize,
    /// Answers that matched neither the good files nor good files + the original: must be 0
    /// for files with checksums.
    silently_changed: Vec<String>,
}

/// Drops `count` mutants (one at a time) beside the good files of `lake` and checks every
/// answer; every `strict_every`-th mutant is also queried by a strict session.
async fn run_mutants(lake: &Lake, count: u64, strict_every: u64) -> Outcomes {
    let (good, good_extremes) = lake.good_totals();
    // The untouched lake answers exactly what the parquet crate read.
    let session = lake.open(false).await;
    let all = run(&session, ALL_ROWS).await.unwrap();
    assert_eq!(Fingerprint::of(&all), good, "the intact lake's rows");
    let stats = run(&session, FROM_STATISTICS).await.unwrap();
    assert_eq!(Extremes::from_answer(&stats[0]), good_extremes);

    let mut outcomes = Outcomes::default();
    let mutant_dir = lake.location.table_dir("spans").join(MUTANT_DIR);
    let mut previous: Option<Path> = None;
    for i in 0..count {
        let mut rng = Rng::new(SEED, i);
        let victim = &lake.spans[i as usize % lake.spans.len()];
        let (kind, bytes) = mutate(&victim.1, &mut rng);
        let what = format!("mutant {i} (seed {SEED:#x}, {kind:?} of {})", victim.0);
        if let Some(path) = previous.take() {
            lake.store.delete(&path).await.unwrap();
        }
        let path = mutant_dir.clone().join(format!("mutant-{i:04}.parquet"));
        lake.store.put(&path, bytes.into()).await.unwrap();
        previous = Some(path.clone());
        let name = path.filename().unwrap().to_string();

        let with_mutant = (good.plus(victim.2), good_extremes.plus(&victim.3));
        let session = lake.open(false).await;
        match run(&session, ALL_ROWS).await {
            Ok(all) => {
                let answer = Fingerprint::of(&all);
                if answer == good {
                    assert!(
                        is_quarantined(&session, &name).await,
                        "{what}: left out but not listed"
                    );
                    outcomes.quarantined_at_listing += 1;
                } else if answer == with_mutant.0 {
                    outcomes.intact += 1;
                } else {
                    outcomes
                        .silently_changed
                        .push(format!("{what}: {answer:?}"));
                    continue;
                }
            }
            Err(error) => {
                assert!(
                    error.contains(&name),
                    "{what}: the error does not name the file: {error}"
                );
                if error.contains("decoder failed") || error.contains("internal error") {
                    outcomes.panics_contained += 1;
                }
                outcomes.failed_naming_the_file += 1;
                assert!(
                    is_quarantined(&session, &name).await,
                    "{what}: failed but not quarantined"
                );
                let again = run(&session, ALL_ROWS).await;
                assert_eq!(
                    again.map(|b| Fingerprint::of(&b)),
                    Ok(good),
                    "{what}: the next query"
                );
            }
        }
        // Aggregates from statistics: from the good files, or with the mutant's true figures.
        match run(&session, FROM_STATISTICS).await {
            Ok(answer) => {
                let answer = Extremes::from_answer(&answer[0]);
                if answer != good_extremes && answer != with_mutant.1 {
                    outcomes
                        .silently_changed
                        .push(format!("{what}: statistics answered {answer:?}"));
                }
            }
            Err(error) => assert!(error.contains(&name), "{what}: {error}"),
        }
        if i % strict_every == 0 {
            let strict = lake.open(true).await;
            match run(&strict, ALL_ROWS).await {
                Ok(all) => {
                    let answer = Fingerprint::of(&all);
                    if answer != with_mutant.0 {
                        outcomes
                            .silently_changed
                            .push(format!("{what}: strict session answered {answer:?}"));
                    }
                }
                Err(error) => assert!(error.contains(&name), "{what}, strict: {error}"),
            }
        }
    }
    if let Some(path) = previous {
        lake.store.delete(&path).await.unwrap();
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutants_of_checksummed_files_never_panic_and_never_change_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::generate(dir.path().to_str().unwrap(), vec![], true).await;
    let outcomes = run_mutants(&lake, 300, 5).await;
    eprintln!("local, 300 mutants of checksummed files: {outcomes:?}");
    assert!(
        outcomes.silently_changed.is_empty(),
        "{:#?}",
        outcomes.silently_changed
    );
    // The run exercises every outcome, so a check that stopped working would show here.
    assert!(outcomes.quarantined_at_listing > 0, "{outcomes:?}");
    assert!(outcomes.failed_naming_the_file > 0, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutants_of_files_without_checksums_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::generate(dir.path().to_str().unwrap(), vec![], false).await;
    let mut outcomes = run_mutants(&lake, 100, 5).await;
    // Without checksums a flipped bit in a page can change a value unnoticed: that is why
    // tokenledger writes them. Reported, not asserted.
    let changed = std::mem::take(&mut outcomes.silently_changed);
    eprintln!(
        "local, 100 mutants of files without checksums: {} silently changed answers, e.g. {:?}; {outcomes:?}",
        changed.len(),
        changed.first()
    );
    assert!(outcomes.quarantined_at_listing > 0, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutants_on_s3_never_panic_and_never_change_an_answer() {
    let Some(server) = S3Server::start("mutants") else {
        return;
    };
    let lake = Lake::generate("s3://mutants/lake", server.overrides(), true).await;
    let outcomes = run_mutants(&lake, 40, 4).await;
    eprintln!("S3, 40 mutants of checksummed files: {outcomes:?}");
    assert!(
        outcomes.silently_changed.is_empty(),
        "{:#?}",
        outcomes.silently_changed
    );
    assert!(outcomes.quarantined_at_listing > 0, "{outcomes:?}");
}

/// Flips one bit in the middle of the `input_tokens` data pages of a Parquet file, behind its
/// intact footer.
fn flip_a_bit_in_input_tokens(file: &Bytes) -> Vec<u8> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(file)
        .unwrap();
    let column = metadata
        .row_group(0)
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "input_tokens")
        .unwrap();
    // The dictionary page (if any) comes first; the data pages run to the end of the chunk.
    let start = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset());
    let end = start + column.compressed_size();
    let middle = (column.data_page_offset() + end) / 2;
    let mut bytes = file.to_vec();
    bytes[middle as usize] ^= 0x08;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_under_serve_never_deny_the_table_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::generate(dir.path().to_str().unwrap(), vec![], true).await;
    let spans = dir.path().join("spans");
    std::fs::write(
        spans.join("zz_not_parquet.parquet"),
        "PAR1 this is not parquet at all PAR1",
    )
    .unwrap();
    std::fs::write(
        spans.join("zz_flipped.parquet"),
        flip_a_bit_in_input_tokens(&lake.spans[0].1),
    )
    .unwrap();
    let server = ServeProcess::serve(dir.path(), false);
    server.pytest(".venv", &["test_bad_files.py"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_checksums_we_write_are_the_ones_pyarrow_verifies() {
    let Some(python) = crate::peers::venv_python(".venv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::generate(dir.path().to_str().unwrap(), vec![], true).await;
    let flipped = dir.path().join("flipped.parquet");
    std::fs::write(&flipped, flip_a_bit_in_input_tokens(&lake.spans[0].1)).unwrap();
    // pyarrow (Arrow C++) checks each page's CRC against its bytes when asked to.
    let script = r#"
import sys, pathlib, pyarrow.parquet as pq
root, flipped = pathlib.Path(sys.argv[1]), sys.argv[2]
for path in sorted(root.rglob("*.parquet")):
    if path.name == "flipped.parquet":
        continue
    table = pq.read_table(path, page_checksum_verification=True)
    print("verified", path.relative_to(root), table.num_rows)
try:
    pq.read_table(flipped, page_checksum_verification=True)
    print("flipped read without error")
except OSError as e:
    print("flipped rejected:", e)
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(dir.path())
        .arg(&flipped)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file tokenledger wrote (the four tables), with the rows the parquet crate read.
    for (path, _, fingerprint, _) in &lake.spans {
        let relative = path.as_ref().rsplit("spans/").next().unwrap();
        let line = format!("verified spans/{relative} {}", fingerprint.rows);
        assert!(report.contains(&line), "{line} missing from:\n{report}");
    }
    for table in ["outcomes", "baselines", "model_prices"] {
        assert!(report.contains(&format!("verified {table}/")), "{report}");
    }
    assert!(
        report.contains(
            "flipped rejected: could not verify page integrity, CRC checksum verification failed"
        ),
        "{report}"
    );
}
