//! Flight streaming throughput: rows per second of one large query streamed over loopback Flight
//! SQL (server and arrow-flight's Rust client decoding every batch, in this process) against
//! collecting the same query in-process. Interleaved runs after a warm-up; medians of `RUNS`.
//!
//! `cargo bench --bench flight_streaming -- DATA_DIR [RUNS] [SQL]`
//! (`benches/run.sh` generates the data and runs this through `benches/harness.py`, which reads
//! the last line: `result rows=… in_process_ms=… flight_ms=… in_process_cpu_ms=…`, the last
//! being the process's CPU time, all threads, while collecting in-process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};
use tokenledger_flight_server::{ServeOptions, bind, serve_on};
use tonic::transport::Channel;

const LARGE_SQL: &str = "SELECT trace_id, span_id, workflow, model, input_tokens, \
                           output_tokens, cost_usd, start_time FROM spans";

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let data = args
        .first()
        .ok_or("usage: flight_streaming DATA_DIR [RUNS] [SQL]")?;
    let runs: usize = args.get(1).map_or(Ok(5), |r| r.parse())?;
    let sql = args.get(2).map_or(LARGE_SQL, String::as_str).to_string();

    let session =
        Arc::new(TraceSession::open(DataLocation::parse(data)?, &SessionOptions::default()).await?);
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        logins: None,
        tls: None,
        allow_plaintext_passwords: false,
        limits: Default::default(),
    };
    let listener = bind(&options).await?;
    let address = format!("http://{}", listener.local_addr()?);
    let served = Arc::clone(&session);
    tokio::spawn(async move { serve_on(served, &options, listener, std::future::pending()).await });
    // Windows and frames as a bulk-transfer client sets them (gRPC C++ grows its windows by BDP
    // probing; tonic's default 64 KiB window would cap the stream at one round trip per 64 KiB).
    let channel = Channel::from_shared(address)?
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);

    let mut in_process = Vec::new();
    let mut in_process_cpu = Vec::new();
    let mut over_flight = Vec::new();
    let mut rows = 0;
    // Round 0 is the warm-up (file listing, footers, page cache) and is not counted.
    for round in 0..=runs {
        let cpu_before = process_cpu()?;
        let (local_rows, local) = collect_in_process(&session, &sql).await?;
        let local_cpu = process_cpu()? - cpu_before;
        let (flight_rows, flight) = stream_over_flight(&mut client, &sql).await?;
        if local_rows != flight_rows {
            return Err(format!("in-process {local_rows} rows, Flight {flight_rows} rows").into());
        }
        rows = local_rows;
        println!("round {round}: in-process {local:?}, Flight {flight:?}");
        if round > 0 {
            in_process.push(local);
            in_process_cpu.push(local_cpu);
            over_flight.push(flight);
        }
    }
    let (local, flight) = (median(&mut in_process), median(&mut over_flight));
    let per_second = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    println!("rows: {rows}; medians of {runs} interleaved runs");
    println!(
        "in-process collect: {local:?} = {:.2} M rows/s",
        per_second(local)
    );
    println!(
        "Flight over loopback: {flight:?} = {:.2} M rows/s",
        per_second(flight)
    );
    println!(
        "Flight / in-process throughput: {:.0} %",
        100.0 * local.as_secs_f64() / flight.as_secs_f64()
    );
    println!(
        "result rows={rows} in_process_ms={:.1} flight_ms={:.1} in_process_cpu_ms={:.0}",
        local.as_secs_f64() * 1e3,
        flight.as_secs_f64() * 1e3,
        median(&mut in_process_cpu).as_secs_f64() * 1e3
    );
    Ok(())
}

async fn collect_in_process(
    session: &TraceSession,
    sql: &str,
) -> Result<(usize, Duration), BoxError> {
    let started = Instant::now();
    let batches = session
        .plan_sql(sql, Access::ReadWrite)
        .await?
        .collect()
        .await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    Ok((rows, started.elapsed()))
}

/// GetFlightInfo then DoGet, decoding every batch as a client would.
async fn stream_over_flight(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<(usize, Duration), BoxError> {
    let started = Instant::now();
    let info = client.execute(sql.to_string(), None).await?;
    let ticket = info.endpoint[0].ticket.clone().ok_or("no ticket")?;
    let mut stream = client.do_get(ticket).await?;
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows();
    }
    Ok((rows, started.elapsed()))
}

/// This process's CPU time so far, user and system, all threads (`/proc/self/stat`, in clock
/// ticks of 10 ms: the kernel's USER_HZ is 100 on Linux).
fn process_cpu() -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').ok_or("no ) in /proc/self/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
