//! `tokenledger query`: SQL over the trace tables, one result per statement.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Instant;

use datafusion::sql::parser::DFParser;
use tokenledger_engine::curated::AsOf;
use tokenledger_engine::{Access, TraceSession};

use crate::args::{ClusterArgs, DataArg, open_as_of, parse_as_of};
use crate::error::CliError;
use crate::output::{self, Format};

/// Run SQL over the trace tables.
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    data: DataArg,
    /// The SQL to run (one or more statements). Omit it to read SQL from -f or stdin.
    sql: Option<String>,
    /// Read SQL from this file.
    #[arg(short = 'f', long = "file", conflicts_with = "sql")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the result here instead of stdout (required for parquet).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print each statement's wall time and row count to stderr.
    #[arg(long)]
    timing: bool,
    /// Read the tables as they had been compacted by this time (YYYY-MM-DD or RFC 3339):
    /// an audit's answer, which later compactions do not change.
    #[arg(long, value_parser = parse_as_of)]
    as_of: Option<AsOf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl QueryArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            sql,
            file,
            format,
            output,
            timing,
            as_of,
            cluster,
        } = self;
        let sql = read_sql(sql, file)?;
        let session = open_as_of(&data, as_of, &cluster).await?;
        run_sql(&session, &sql, format, output.as_deref(), timing).await
    }
}

fn read_sql(sql: Option<String>, file: Option<PathBuf>) -> Result<String, CliError> {
    let sql = match (sql, file) {
        (Some(sql), _) if sql != "-" => sql,
        (_, Some(path)) => std::fs::read_to_string(&path).map_err(|e| {
            CliError::Usage(format!("cannot read SQL file {}: {e}", path.display()))
        })?,
        _ if std::io::stdin().is_terminal() => {
            return Err(CliError::Usage(
                "no SQL given: pass it as an argument, with -f FILE, or on stdin".into(),
            ));
        }
        _ => {
            let mut sql = String::new();
            std::io::stdin().read_to_string(&mut sql)?;
            sql
        }
    };
    if sql.trim().is_empty() {
        return Err(CliError::Usage("the SQL is empty".into()));
    }
    Ok(sql)
}

/// Runs each statement in `sql`; results are printed in order.
async fn run_sql(
    session: &TraceSession,
    sql: &str,
    format: Format,
    output: Option<&std::path::Path>,
    timing: bool,
) -> Result<(), CliError> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.is_empty() {
        return Err(CliError::Usage("the SQL holds no statement".into()));
    }
    for statement in statements {
        let started = Instant::now();
        let frame = session.plan(statement, Access::ReadWrite).await?;
        let stream = session.execute(frame).await?;
        let rows = output::write(stream, format, output).await?;
        if timing {
            eprintln!(
                "{rows} rows in {:.3} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
