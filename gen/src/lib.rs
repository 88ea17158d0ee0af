//! tokenledger's synthetic data generator (`tokenledger gen`): deterministic, realistic agent
//! decision traces written as the engine's tables.
//!
//! Work items of four workflows arrive over a period. Each attempt retrieves documents, runs a
//! few LLM turns whose context grows with every answer and tool result, and ends in a validation
//! step; first-try success depends on the model tier and the item's difficulty. Failed attempts
//! are retried (sometimes on a bigger model) until success or give-up; some items end with a
//! human. Output is Parquet, sorted by start time within each workflow's files, so min/max
//! statistics prune time ranges. The same seed gives the same bytes: every file is produced by
//! its own random stream, whatever the thread schedule.
//!
//! Simulation and Parquet encoding are CPU work: they run on blocking threads, one file pair at
//! a time per core, and only the uploads run on the async runtime.

mod catalog;
mod error;
mod rng;
mod rows;

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use tokenledger_engine::DataLocation;
use tokenledger_engine::integrity::Policy;
use tokenledger_engine::schema::{BASELINES, MODEL_PRICES, OUTCOMES, SPANS};
use tokenledger_engine::storage::writer::{
    ParquetFileBuilder, checked_spans_properties, put_file, writer_properties,
};

pub use catalog::{CHAT_MODELS, EMBEDDING_MODEL, Model, Tier, WORKFLOWS, Workflow};
use catalog::{baselines_batch, model_prices_batch};
pub use error::{GenError, Result};
pub use rng::Rng;
pub use rows::Outcome;
use rows::{Attrs, OutcomeColumns, OutcomeRow, SpanColumns, SpanRow, Tokens};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Work items across all workflows.
    pub work_items: u64,
    /// Random seed; the same seed gives the same files.
    pub seed: u64,
    /// Start of the simulated period (micros since the epoch, UTC).
    pub start_micros: i64,
    /// Length of the simulated period in days.
    pub days: u32,
    /// Roughly how many spans go into one file.
    pub spans_per_file: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            work_items: 10_000,
            seed: 42,
            start_micros: 1_767_571_200_000_000, // 2026-01-05T00:00:00Z, a Monday
            days: 84,
            spans_per_file: 4_000_000,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// Work items (rows of `outcomes`).
    pub work_items: u64,
    /// Rows of `spans`.
    pub spans: u64,
    /// Parquet files written, all tables.
    pub files: usize,
}

/// Called with the number of work items just finished, from the threads that generate them.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A [`Progress`] that reports nowhere.
pub fn silent() -> Progress {
    Arc::new(|_| {})
}

/// Rows per batch handed to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;
/// Spans an attempt produces on average; used only to size files.
const SPANS_PER_ITEM_ESTIMATE: u64 = 14;
/// USD per minute of human correction ($48/hour, loaded).
const HUMAN_USD_PER_MINUTE: f64 = 0.80;
/// Attempts before an item is given up.
const MAX_ATTEMPTS: i32 = 4;
const MICROS_PER_MS: i64 = 1_000;

/// One file's worth of work items of one workflow, over one slice of the period.
#[derive(Debug, Clone)]
struct Segment {
    workflow: usize,
    index: usize,
    first_item: u64,
    items: u64,
    start: i64,
    end: i64,
}

/// Generates traces into `location` (created if local), writing `spans`, `outcomes`,
/// `model_prices` and `baselines`. `progress` is told of work items as they are done.
pub async fn generate(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    options: &GenOptions,
    progress: Progress,
) -> Result<GenSummary> {
    if let DataLocation::Local(dir) = location {
        std::fs::create_dir_all(dir)?;
    }
    let segments = plan_segments(options);
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = segments.into_iter();
    let mut summary = GenSummary::default();
    loop {
        while tasks.len() < parallelism {
            let Some(segment) = pending.next() else { break };
            let (store, location, progress) =
                (Arc::clone(&store), location.clone(), Arc::clone(&progress));
            let seed = options.seed;
            tasks.spawn(async move {
                let built = tokio::task::spawn_blocking(move || {
                    build_segment(&location, segment, seed, progress.as_ref())
                })
                .await
                .map_err(|e| GenError::Worker(e.to_string()))??;
                for (path, file) in built.files {
                    put_file(store.as_ref(), &path, file).await?;
                }
                Ok::<_, GenError>(built.summary)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let part = done.map_err(|e| GenError::Worker(e.to_string()))??;
        summary.work_items += part.work_items;
        summary.spans += part.spans;
        summary.files += part.files;
    }
    for (table, batch) in [
        (&MODEL_PRICES, model_prices_batch()?),
        (&BASELINES, baselines_batch()?),
    ] {
        let path = location
            .table_dir(table.name)
            .join(format!("{}.parquet", table.name));
        let schema = table.schema();
        let mut file = ParquetFileBuilder::new(&schema, writer_properties(&schema, &[]))?;
        file.write(&batch)?;
        put_file(store.as_ref(), &path, file.finish()?).await?;
        summary.files += 1;
    }
    Ok(summary)
}

/// Splits each workflow's items into time slices of about `spans_per_file` spans.
fn plan_segments(options: &GenOptions) -> Vec<Segment> {
    let period = i64::from(options.days) * 86_400_000_000;
    let mut segments = Vec::new();
    let mut assigned = 0;
    for (w, workflow) in WORKFLOWS.iter().enumerate() {
        let items = if w + 1 == WORKFLOWS.len() {
            options.work_items - assigned
        } else {
            (options.work_items as f64 * workflow.share).round() as u64
        }
        .min(options.work_items - assigned);
        assigned += items;
        let count = (items * SPANS_PER_ITEM_ESTIMATE)
            .div_ceil(options.spans_per_file.max(1))
            .max(1);
        for s in 0..count {
            let first = items * s / count;
            let next = items * (s + 1) / count;
            segments.push(Segment {
                workflow: w,
                index: s as usize,
                first_item: first,
                items: next - first,
                start: options.start_micros + period * s as i64 / count as i64,
                end: options.start_micros + period * (s as i64 + 1) / count as i64,
            });
        }
    }
    segments.retain(|s| s.items > 0);
    segments
}

/// The finished files of one segment, ready to store.
struct BuiltSegment {
    files: Vec<(Path, Bytes)>,
    summary: GenSummary,
}

/// Simulates one segment and encodes its `spans` and `outcomes` files (CPU work: runs on a
/// blocking thread).
fn build_segment(
    location: &DataLocation,
    segment: Segment,
    seed: u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<BuiltSegment> {
    let workflow = &WORKFLOWS[segment.workflow];
    let mut rng = Rng::new(
        seed,
        ((segment.workflow as u64) << 32) | segment.index as u64,
    );
    let file_name = format!("part-{:05}.parquet", segment.index);
    let span_schema = SPANS.schema();
    let outcome_schema = OUTCOMES.schema();
    let mut span_file = SpanFile {
        file: ParquetFileBuilder::new(
            &span_schema,
            checked_spans_properties(&span_schema, &["workflow", "start_time"]),
        )?,
        policy: Policy::now(),
    };
    let mut outcome_file = ParquetFileBuilder::new(
        &outcome_schema,
        writer_properties(&outcome_schema, &["workflow"]),
    )?;

    let mut spans = SpanColumns::new(workflow);
    let mut outcomes = OutcomeColumns::new(workflow);
    let mut pending: Vec<SpanRow> = Vec::with_capacity(16 * 1024);
    let mut sim = Simulator {
        rng: &mut rng,
        workflow,
        seq: 0,
    };
    let mean_gap = (segment.end - segment.start) as f64 / (segment.items + 1) as f64;
    let mut arrival = segment.start;
    let mut span_count = 0u64;
    for item in segment.first_item..segment.first_item + segment.items {
        arrival += sim.rng.exponential(mean_gap) as i64;
        let outcome = sim.work_item(item, arrival, &mut pending);
        outcomes.append(&outcome);
        if pending.len() >= 8 * 1024 {
            // Every later span starts at or after this arrival, so spans before it are final.
            span_count += flush_sorted(&mut pending, Some(arrival), &mut spans, &mut span_file)?;
        }
        if outcomes.len() >= BATCH_ROWS {
            outcome_file.write(&outcomes.finish()?)?;
            progress(BATCH_ROWS as u64);
        }
    }
    span_count += flush_sorted(&mut pending, None, &mut spans, &mut span_file)?;
    if !spans.is_empty() {
        span_file.write(&spans.finish()?)?;
    }
    if !outcomes.is_empty() {
        progress(outcomes.len() as u64);
        outcome_file.write(&outcomes.finish()?)?;
    }
    let file_path = |table: &str| {
        location
            .table_dir(table)
            .join(workflow.name)
            .join(file_name.as_str())
    };
    Ok(BuiltSegment {
        files: vec![
            (file_path(SPANS.name), span_file.file.finish()?),
            (file_path(OUTCOMES.name), outcome_file.finish()?),
        ],
        summary: GenSummary {
            work_items: segment.items,
            spans: span_count,
            files: 2,
        },
    })
}

/// A `spans` file being built, every batch checked against the validation policy first (the
/// file says so in its footer, so readers do not check it again).
struct SpanFile {
    file: ParquetFileBuilder,
    policy: Policy,
}

impl SpanFile {
    fn write(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        let check = self
            .policy
            .check_batch(batch)
            .map_err(|e| GenError::Invalid(e.to_string()))?;
        if check.failing_rows > 0 {
            return Err(GenError::Invalid(check.summary()));
        }
        Ok(self.file.write(batch)?)
    }
}

/// Moves the pending spans that start before `watermark` (all of them for `None`) into the
/// builders in start-time order, writing full batches.
fn flush_sorted(
    pending: &mut Vec<SpanRow>,
    watermark: Option<i64>,
    spans: &mut SpanColumns,
    file: &mut SpanFile,
) -> Result<u64> {
    pending.sort_unstable_by_key(|s| (s.start, s.seq));
    let ready = watermark.map_or(pending.len(), |w| pending.partition_point(|s| s.start < w));
    for row in pending.drain(..ready) {
        spans.append(&row)?;
        if spans.len() >= BATCH_ROWS {
            file.write(&spans.finish()?)?;
        }
    }
    Ok(ready as u64)
}

/// Simulates the attempts at one work item.
struct Simulator<'a> {
    rng: &'a mut Rng,
    workflow: &'static Workflow,
    seq: u64,
}

/// How an attempt ended.
enum AttemptEnd {
    Resolved,
    /// Wrong answer caught by validation, or a technical error.
    Failed,
}

struct Attempt {
    trace: u128,
    root: u64,
    number: i32,
    model: &'static Model,
    tenant: &'static str,
    item: u64,
}

impl Simulator<'_> {
    fn work_item(&mut self, item: u64, arrival: i64, out: &mut Vec<SpanRow>) -> OutcomeRow {
        let wf = self.workflow;
        // Most inputs are easy; a tail is hard.
        let difficulty = self.rng.unit().powf(1.6);
        let tenant_weights: Vec<f64> = wf.tenants.iter().map(|t| t.1).collect();
        let tenant = wf.tenants[self.rng.pick(&tenant_weights)].0;
        let mut tier = match self.rng.pick(&wf.tier_mix) {
            0 => Tier::Small,
            1 => Tier::Medium,
            _ => Tier::Large,
        };
        let mut t = arrival;
        let mut resolved_attempt = None;
        let mut last = None;
        let mut stopped = None;
        for number in 1..=MAX_ATTEMPTS {
            let model = &CHAT_MODELS[tier as usize];
            let trace = (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
            let attempt = Attempt {
                trace,
                root: self.span_id(),
                number,
                model,
                tenant,
                item,
            };
            let (end, finished_at) = self.attempt(&attempt, difficulty, t, out);
            t = finished_at;
            last = Some(attempt);
            if let AttemptEnd::Resolved = end {
                resolved_attempt = Some(number);
                break;
            }
            // After a failure the agent may hand the item to a person, or the requester may
            // give up waiting; otherwise it retries.
            let next = self.rng.unit();
            if next < 0.25 {
                stopped = Some(Outcome::Escalated);
                break;
            }
            if number >= 2 && next < 0.35 {
                stopped = Some(Outcome::Abandoned);
                break;
            }
            // Back off, and sometimes escalate to a bigger model.
            t += self.rng.int(1_000, 30_000) * MICROS_PER_MS;
            if self.rng.chance(0.5) {
                tier = tier.up();
            }
        }
        let last = last.expect("at least one attempt runs");
        let (outcome, human_minutes, value) = match resolved_attempt {
            Some(_) => {
                let corrected = self.rng.chance(0.05 + 0.10 * difficulty);
                let minutes = if corrected {
                    self.rng.lognormal(6.0, 0.5)
                } else {
                    0.0
                };
                (
                    Outcome::Resolved,
                    minutes,
                    self.rng.lognormal(wf.value_usd, 0.35),
                )
            }
            None => match stopped {
                Some(Outcome::Escalated) => {
                    (Outcome::Escalated, self.rng.lognormal(25.0, 0.4), 0.0)
                }
                Some(other) => (other, 0.0, 0.0),
                None => (Outcome::Failed, 0.0, 0.0),
            },
        };
        if human_minutes > 0.0 {
            let role = if outcome == Outcome::Resolved {
                "reviewer"
            } else {
                "specialist"
            };
            let duration_ms = (human_minutes * 60_000.0) as i64;
            out.push(self.span(
                &last,
                Some(last.root),
                t,
                duration_ms,
                "human",
                "human_review",
                Attrs::Human { role },
            ));
            t += duration_ms * MICROS_PER_MS;
        }
        OutcomeRow {
            item,
            tenant,
            outcome,
            resolved_attempt,
            value_usd: round_cents(value),
            human_minutes: (human_minutes * 100.0).round() / 100.0,
            human_cost_usd: round_cents(human_minutes * HUMAN_USD_PER_MINUTE),
            closed_at: t,
        }
    }

    /// Runs one attempt from `start`; returns how it ended and when.
    fn attempt(
        &mut self,
        a: &Attempt,
        difficulty: f64,
        start: i64,
        out: &mut Vec<SpanRow>,
    ) -> (AttemptEnd, i64) {
        let wf = self.workflow;
        let p = (a.model.skill - wf.hardness * a.model.difficulty_sensitivity * difficulty)
            .clamp(0.05, 0.99);
        let succeeds = self.rng.chance(p);
        // A third of failures are technical (timeouts, rate limits, bad JSON) and stop the attempt.
        let error_turn_draw = self.rng.unit();
        let mut t = start + self.rng.int(2, 20) * MICROS_PER_MS;

        // Retrieval: fetch many documents, use few.
        let fetched = self.rng.lognormal(wf.docs_fetched, 0.4).round().max(1.0) as i32;
        let used = (1 + (f64::from(fetched) * self.rng.uniform(0.05, 0.35)) as i32).min(fetched);
        let query_tokens = self.rng.int(15, 80);
        let duration = self.rng.int(40, 250);
        let tokens = Tokens {
            input: query_tokens,
            cached: 0,
            output: 0,
            reasoning: 0,
        };
        let mut retrieval = self.span(
            a,
            Some(a.root),
            t,
            duration,
            "retrieval",
            EMBEDDING_MODEL.span_name,
            Attrs::Retrieval { index: wf.index },
        );
        retrieval.model = Some(&EMBEDDING_MODEL);
        retrieval.tokens = Some(tokens);
        retrieval.cost = Some(EMBEDDING_MODEL.price_at(t).cost(query_tokens, 0, 0, 0));
        retrieval.docs = Some((fetched, used));
        out.push(retrieval);
        t += duration * MICROS_PER_MS;

        // LLM turns with growing context; retries carry notes from earlier attempts.
        let mut context = self.rng.lognormal(wf.base_context, 0.35)
            * (1.0 + 0.25 * f64::from(a.number - 1))
            + f64::from(used) * self.rng.lognormal(450.0, 0.3);
        let turns = self.rng.int(wf.turns.0, wf.turns.1) + i64::from(difficulty > 0.7);
        let error_turn = (!succeeds && error_turn_draw < 0.35)
            .then(|| 1 + (error_turn_draw / 0.35 * turns as f64) as i64);
        let mut previous_input = 0i64;
        for turn in 1..=turns {
            let input = context.round() as i64;
            let cached = if turn > 1 {
                (previous_input as f64 * self.rng.uniform(0.6, 0.95)) as i64
            } else {
                0
            };
            let error = (error_turn == Some(turn))
                .then(|| ["timeout", "rate_limit", "invalid_json"][self.rng.int(0, 2) as usize]);
            let (output, reasoning) = match error {
                Some(_) => (0, 0),
                None => {
                    let reasoning = if a.model.reasoning_median > 0.0 {
                        self.rng.lognormal(a.model.reasoning_median, 0.6) as i64
                    } else {
                        0
                    };
                    (
                        self.rng.lognormal(320.0, 0.5).clamp(20.0, 4_000.0) as i64 + reasoning,
                        reasoning,
                    )
                }
            };
            let duration =
                ((250.0 + output as f64 * a.model.ms_per_output_token + input as f64 * 0.015)
                    * self.rng.lognormal(1.0, 0.2)) as i64;
            let finish_reason = if error.is_some() {
                "error"
            } else if output >= 4_000 {
                "length"
            } else {
                "stop"
            };
            let tokens = Tokens {
                input,
                cached: cached.min(input),
                output,
                reasoning,
            };
            let mut call = self.span(
                a,
                Some(a.root),
                t,
                duration,
                "llm",
                a.model.span_name,
                Attrs::Chat { finish_reason },
            );
            call.model = Some(a.model);
            call.tokens = Some(tokens);
            // Most gateways report cost; the rest is priced later from model_prices.
            call.cost = self.rng.chance(0.8).then(|| {
                a.model.price_at(t).cost(
                    tokens.input,
                    tokens.cached,
                    tokens.output,
                    tokens.reasoning,
                )
            });
            call.error = error;
            out.push(call);
            t += duration * MICROS_PER_MS;
            if error.is_some() {
                return (self.close_attempt(a, start, t, false, out), t);
            }
            previous_input = input;
            context += output as f64;
            if turn < turns {
                let (tool, span_name) =
                    wf.tools[self.rng.int(0, wf.tools.len() as i64 - 1) as usize];
                let duration = self.rng.lognormal(180.0, 0.6) as i64 + 1;
                out.push(self.span(
                    a,
                    Some(a.root),
                    t,
                    duration,
                    "tool",
                    span_name,
                    Attrs::Tool { tool },
                ));
                context += self.rng.lognormal(500.0, 0.6);
                t += duration * MICROS_PER_MS;
            }
        }
        let duration = self.rng.int(5, 40);
        let mut validate = self.span(
            a,
            Some(a.root),
            t,
            duration,
            "decision",
            "validate_result",
            Attrs::Validate,
        );
        validate.error = (!succeeds).then_some("validation_failed");
        out.push(validate);
        t += duration * MICROS_PER_MS;
        (self.close_attempt(a, start, t, succeeds, out), t)
    }

    /// Emits the attempt's root span once its end is known.
    fn close_attempt(
        &mut self,
        a: &Attempt,
        start: i64,
        end: i64,
        succeeded: bool,
        out: &mut Vec<SpanRow>,
    ) -> AttemptEnd {
        let mut root = self.span(
            a,
            None,
            start,
            (end - start) / MICROS_PER_MS,
            "decision",
            self.workflow.agent_span,
            Attrs::Agent,
        );
        root.span = a.root;
        root.error = (!succeeded).then_some("attempt_failed");
        out.push(root);
        if succeeded {
            AttemptEnd::Resolved
        } else {
            AttemptEnd::Failed
        }
    }

    fn span_id(&mut self) -> u64 {
        self.rng.next_u64() | 1 // never 0, which marks "no parent"
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        a: &Attempt,
        parent: Option<u64>,
        start: i64,
        duration_ms: i64,
        kind: &'static str,
        name: &'static str,
        attrs: Attrs,
    ) -> SpanRow {
        self.seq += 1;
        SpanRow {
            start,
            seq: self.seq,
            trace: a.trace,
            span: self.span_id(),
            parent: parent.unwrap_or(0),
            item: a.item,
            attempt: a.number,
            tenant: a.tenant,
            kind,
            name,
            model: None,
            tokens: None,
            cost: None,
            duration_ms,
            error: None,
            docs: None,
            attrs,
        }
    }
}

fn round_cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_every_item_once() {
        let options = GenOptions {
            work_items: 1_234_567,
            spans_per_file: 1_000_000,
            ..Default::default()
        };
        let segments = plan_segments(&options);
        assert_eq!(segments.iter().map(|s| s.items).sum::<u64>(), 1_234_567);
        for w in 0..WORKFLOWS.len() {
            let mut next = 0;
            for s in segments.iter().filter(|s| s.workflow == w) {
                assert_eq!(s.first_item, next);
                next += s.items;
                assert!(s.start < s.end);
            }
        }
        assert!(
            segments.len() > WORKFLOWS.len(),
            "large runs are split into several files"
        );
    }
}
