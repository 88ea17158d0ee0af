//! `tokenledger compact`: landing files into the curated Delta tables, then optional
//! bin-packing and vacuum.

use std::time::Duration;

use tokenledger_engine::curated::{
    CompactOptions, CompactProgress, DEFAULT_AUDIT_WINDOW, MaintainOptions,
};
use tokenledger_engine::schema::{self, TABLES};

use crate::args::{DataArg, open, parse_bytes};
use crate::error::CliError;

/// Move settled landing files into each table's curated Delta table (`<data>/_curated/`),
/// without losing or doubling a row; delete absorbed landing files after the grace period.
#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    #[command(flatten)]
    data: DataArg,
    /// Only this table (spans, outcomes, model_prices or baselines).
    #[arg(long)]
    table: Option<String>,
    /// Seconds a landing file must have existed before it is compacted.
    #[arg(long, default_value_t = 60)]
    min_age: u64,
    /// Seconds after its compaction a landing file is deleted; longer than any query
    /// (the server's --query-timeout is 300).
    #[arg(long, default_value_t = 3600)]
    grace: u64,
    /// Size of the data files written.
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
    target_file_size: usize,
    /// Landing bytes per commit: each commit is one step of progress.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    batch_size: usize,
    /// Days of history kept readable for audits: the table's retention and the vacuum's.
    #[arg(long, default_value_t = DEFAULT_AUDIT_WINDOW.as_secs() / 86_400)]
    audit_window_days: u64,
    /// Also rewrite the curated table's small files into files of --target-file-size.
    #[arg(long)]
    optimize: bool,
    /// Also delete data files that no version inside the audit window needs.
    #[arg(long)]
    vacuum: bool,
}

impl CompactArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            table,
            min_age,
            grace,
            target_file_size,
            batch_size,
            audit_window_days,
            optimize,
            vacuum,
        } = self;
        let session = open(&data).await?;
        let tables: Vec<&'static schema::TableDef> = match &table {
            Some(name) => vec![*TABLES.iter().find(|t| t.name == name).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown table {name:?}: spans, outcomes, model_prices or baselines"
                ))
            })?],
            None => TABLES.to_vec(),
        };
        let audit_window = Duration::from_secs(audit_window_days * 86_400);
        let options = CompactOptions {
            min_age: Duration::from_secs(min_age),
            grace: Duration::from_secs(grace),
            target_file_size: target_file_size as u64,
            batch_bytes: batch_size as u64,
            audit_window,
        };
        let maintain = MaintainOptions {
            optimize,
            vacuum,
            target_file_size: target_file_size as u64,
            audit_window,
        };
        for table in tables {
            let report = session
                .compact(table, &options, &mut print_compact_progress)
                .await?;
            if report.versions.is_empty() {
                println!("{}: nothing to compact", table.name);
            } else {
                println!(
                    "{}: {} landing files, {} rows -> curated versions {}{}{}",
                    table.name,
                    report.files,
                    report.rows,
                    version_range(&report.versions),
                    duplicates_note(report.duplicates),
                    set_aside_note(report.set_aside)
                );
            }
            if optimize || vacuum {
                let done = session.maintain(table, &maintain).await?;
                if optimize {
                    match done.version {
                        Some(v) => println!(
                            "{}: optimized {} files into {} (version {v})",
                            table.name, done.files_removed, done.files_added
                        ),
                        None => println!("{}: nothing to optimize", table.name),
                    }
                }
                if vacuum {
                    println!(
                        "{}: vacuum deleted {} data files older than the audit window",
                        table.name, done.files_vacuumed
                    );
                }
            }
        }
        Ok(())
    }
}

/// Progress of a compaction, on stderr.
fn print_compact_progress(progress: CompactProgress) {
    match progress {
        CompactProgress::Planned {
            table,
            files,
            bytes,
            commits,
        } if files > 0 => eprintln!(
            "{table}: compacting {files} landing files ({:.1} MiB) in {commits} commits",
            bytes as f64 / (1u64 << 20) as f64
        ),
        CompactProgress::Committed {
            table,
            version,
            files,
            rows,
            duplicates,
            set_aside,
        } => eprintln!(
            "{table}: version {version} committed ({files} landing files, {rows} rows{}{})",
            duplicates_note(duplicates),
            set_aside_note(set_aside)
        ),
        CompactProgress::Cleaned { table, files } => {
            eprintln!("{table}: deleted {files} landing files compacted more than --grace ago")
        }
        CompactProgress::Planned { .. } => {}
    }
}

/// `, 4 duplicate copies left out (first delivery kept)`, or nothing.
fn duplicates_note(duplicates: u64) -> String {
    match duplicates {
        0 => String::new(),
        n => format!(", {n} duplicate span copies left out (the first delivered is kept)"),
    }
}

/// `, 2 rows breaking the validation policy moved to rejected_spans`, or nothing.
fn set_aside_note(rows: u64) -> String {
    match rows {
        0 => String::new(),
        n => format!(", {n} rows breaking the validation policy moved to rejected_spans"),
    }
}

/// `3` or `3-7`.
fn version_range(versions: &[u64]) -> String {
    match (versions.first(), versions.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}-{last}"),
        (Some(first), _) => first.to_string(),
        _ => String::new(),
    }
}
