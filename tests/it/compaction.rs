//! `tokenledger compact` killed at the worst moments: at its fault points and by `kill -9` at
//! random times. After a final run, the spans table must hold exactly the rows of the landing
//! files it started from, as DuckDB counts them from those files, and DuckDB's own Delta reader
//! must agree about the curated table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::peers::{duckdb_csv, ok, repo_root, tokenledger, venv_python};

/// Rows, input tokens and distinct span ids, as one CSV line.
const MEASURE: &str = "SELECT count(*), sum(input_tokens), count(DISTINCT span_id) FROM spans";

/// A data location whose spans and outcomes arrive as many small landing files, as an OTLP
/// receiver leaves them: `pieces` generated data sets of a few work items each.
fn many_landing_files(pieces: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for seed in 0..pieces {
        let out = scratch.path().join(seed.to_string());
        let out_text = out.to_str().unwrap();
        ok(tokenledger(
            &[
                "gen",
                "--out",
                out_text,
                "--work-items",
                "40",
                "--seed",
                &(seed + 1).to_string(),
            ],
            &[],
        ));
        for table in ["spans", "outcomes"] {
            for file in parquet_files(&out.join(table)) {
                let workflow = file
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap();
                let target = dir
                    .path()
                    .join(format!("{table}/otlp/{seed:03}-{workflow}.parquet"));
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::rename(&file, &target).unwrap();
            }
        }
        if seed == 0 {
            for table in ["model_prices", "baselines"] {
                std::fs::rename(out.join(table), dir.path().join(table)).unwrap();
            }
        }
    }
    dir
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files
}

/// The ground truth: DuckDB reading the landing files themselves, each span counted once.
fn truth(dir: &Path) -> Option<String> {
    let csv = duckdb_csv(
        "SELECT count(*), sum(input_tokens), count(DISTINCT span_id) FROM (SELECT DISTINCT ON \
         (trace_id, span_id) * FROM read_parquet('spans/**/*.parquet'))",
        dir,
    )?;
    Some(csv.lines().nth(1).unwrap().to_string())
}

/// What tokenledger answers for the spans table (or `table`, a time-travel call).
fn ours(dir: &Path, table: &str) -> String {
    let sql = MEASURE.replace("FROM spans", &format!("FROM {table}"));
    let csv = ok(tokenledger(
        &[
            "query",
            "--data",
            dir.to_str().unwrap(),
            "--format",
            "csv",
            &sql,
        ],
        &[],
    ));
    csv.lines().nth(1).unwrap().to_string()
}

/// `compact` with one commit per landing file and cleanup as soon as a file is absorbed, so a
/// crash can land in every step.
fn compact_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .args([
            "compact",
            "--data",
            dir.to_str().unwrap(),
            "--table",
            "spans",
        ])
        .args(["--min-age", "0", "--grace", "0", "--batch-size", "1"])
        .current_dir(repo_root())
        .env_remove("TOKENLEDGER_DATA")
        .env_remove("TOKENLEDGER_FAULT")
        .stdin(Stdio::null());
    command
}

fn finish(dir: &Path) {
    let output = compact_command(dir).output().unwrap();
    assert!(
        output.status.success(),
        "the final compaction: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        parquet_files(&dir.join("spans")).is_empty(),
        "every landing file absorbed and deleted"
    );
    let again = compact_command(dir).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to compact"));
}

#[test]
fn a_crash_at_each_fault_point_loses_and_doubles_nothing() {
    for point in ["before-commit", "after-commit", "during-cleanup"] {
        let dir = many_landing_files(3);
        let Some(expected) = truth(dir.path()) else {
            return;
        };
        let crashed = compact_command(dir.path())
            .env("TOKENLEDGER_FAULT", point)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&crashed.stderr);
        assert!(!crashed.status.success(), "{point}: the run aborts");
        assert!(
            stderr.contains(&format!("fault point {point}")),
            "{point}: {stderr}"
        );
        // Read in the state the crash left: nothing missing, nothing twice.
        assert_eq!(ours(dir.path(), "spans"), expected, "after a crash {point}");
        finish(dir.path());
        assert_eq!(
            ours(dir.path(), "spans"),
            expected,
            "after a crash {point} and a rerun"
        );
    }
}

/// A small deterministic generator for the kill times (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// DuckDB's count of the spans of the first `seeds` generated pieces in `source`.
fn truth_of_first(source: &Path, seeds: u32) -> Option<String> {
    let csv = duckdb_csv(
        &format!(
            "SELECT count(*), sum(input_tokens), count(DISTINCT span_id) FROM (SELECT DISTINCT ON \
             (trace_id, span_id) * FROM read_parquet('spans/otlp/*.parquet', filename = true) \
             WHERE CAST(substr(parse_filename(filename), 1, 3) AS INTEGER) < {seeds})"
        ),
        source,
    )?;
    Some(csv.lines().nth(1).unwrap().to_string())
}

/// Copies the span files of generated pieces `seeds` from `source` into `dir`'s landing.
fn deliver(source: &Path, dir: &Path, seeds: std::ops::Range<u32>) {
    let landing = dir.join("spans/otlp");
    std::fs::create_dir_all(&landing).unwrap();
    for file in parquet_files(&source.join("spans/otlp")) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let seed: u32 = name[..3].parse().unwrap();
        if seeds.contains(&seed) {
            std::fs::copy(&file, landing.join(name)).unwrap();
        }
    }
}

#[test]
fn twenty_kill_9s_mid_compaction_lose_and_double_nothing_and_duckdb_reads_the_result() {
    // A pipeline keeps delivering: two more generated pieces (eight span files) before each run.
    let source = many_landing_files(44);
    let dir = tempfile::tempdir().unwrap();
    deliver(source.path(), dir.path(), 0..4);
    let Some(mut expected) = truth_of_first(source.path(), 4) else {
        return;
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill times from seed {seed}");
    let mut random = Lcg(seed);
    let mut killed_mid_run = 0;
    for kill in 0..20 {
        let delivered = 4 + 2 * (kill + 1);
        deliver(source.path(), dir.path(), delivered - 2..delivered);
        expected = truth_of_first(source.path(), delivered).unwrap();
        let mut child = compact_command(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + random.next_below(900)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            ours(dir.path(), "spans"),
            expected,
            "after kill {kill} (seed {seed})"
        );
    }
    eprintln!("{killed_mid_run} of 20 kills hit a running compaction");
    assert!(
        killed_mid_run >= 10,
        "{killed_mid_run} of 20 kills hit a running compaction"
    );
    finish(dir.path());
    assert_eq!(ours(dir.path(), "spans"), expected);

    // `--as-of`: now, everything compacted; before the first compaction, an error.
    let data = dir.path().to_str().unwrap();
    let now = chrono_free_now();
    let as_of = ok(tokenledger(
        &[
            "query", "--data", data, "--as-of", &now, "--format", "csv", MEASURE,
        ],
        &[],
    ));
    assert_eq!(as_of.lines().nth(1), Some(expected.as_str()));
    let early = tokenledger(
        &["query", "--data", data, "--as-of", "2020-01-01", MEASURE],
        &[],
    );
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(!early.status.success());
    assert!(stderr.contains("before its history begins"), "{stderr}");

    // DuckDB's Delta reader agrees on the latest version and on an earlier one.
    let Some(python) = venv_python(".venv-delta") else {
        return;
    };
    let curated = dir.path().join("_curated/spans");
    let output = Command::new(python)
        .arg(repo_root().join("tests/python/delta_reader.py"))
        .arg(&curated)
        .arg("1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let states: Vec<&str> = stdout.lines().collect();
    assert_eq!(states[0], format!("latest,{expected}"));
    assert_eq!(states[1], format!("v1,{}", ours(dir.path(), "spans_at(1)")));
}

/// The current time as RFC 3339 (UTC), without a date library.
fn chrono_free_now() -> String {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
