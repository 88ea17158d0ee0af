//! `tokenledger gen`: a deterministic synthetic data set.

use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tokenledger_engine::DataLocation;
use tokenledger_gen::{GenOptions, generate};

use crate::error::CliError;

/// Generate a synthetic, deterministic trace data set.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Where to write: a local directory or s3://bucket/prefix.
    #[arg(long)]
    out: String,
    /// Work items to simulate (about 14 spans each).
    #[arg(long, default_value_t = 10_000)]
    work_items: u64,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Length of the simulated period in days.
    #[arg(long, default_value_t = 84)]
    days: u32,
}

impl GenArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            out,
            work_items,
            seed,
            days,
        } = self;
        let location = DataLocation::parse(&out)?;
        let store = location.open_store(&[])?;
        let options = GenOptions {
            work_items,
            seed,
            days,
            ..GenOptions::default()
        };
        let progress = ProgressBar::new(work_items).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} work items {per_sec} eta {eta}")
                .expect("static progress template"),
        );
        let started = Instant::now();
        let bar = progress.clone();
        let summary = generate(store, &location, &options, Arc::new(move |n| bar.inc(n))).await?;
        progress.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} work items, {} spans in {} files to {location} in {secs:.2} s ({:.0} spans/s)",
            summary.work_items,
            summary.spans,
            summary.files,
            summary.spans as f64 / secs
        );
        Ok(())
    }
}
