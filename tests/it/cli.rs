//! The CLI as scripts and people use it: queries, formats, and one clear error per failure.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::peers::{duckdb_csv, ok, repo_root, tokenledger};

const HANDMADE: &str = "testdata/handmade";

fn fails_with(args: &[&str], expected: &str) {
    fails_with_env(args, &[], expected);
}

fn fails_with_env(args: &[&str], env: &[(&str, &str)], expected: &str) {
    let out = tokenledger(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in {stderr:?}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.starts_with("error: ")
            && !stderr.contains("panicked")
            && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn bad_sql_unknown_table_and_missing_location_are_one_clear_line() {
    fails_with(
        &["query", "--data", HANDMADE, "SELEKT 1"],
        "SQL error: ParserError",
    );
    fails_with(
        &["query", "--data", HANDMADE, "SELECT * FROM nope"],
        "table 'tokenledger.public.nope' not found",
    );
    fails_with(
        &["query", "--data", "/no/such/dir", "SELECT 1"],
        "data location \"/no/such/dir\": does not exist",
    );
    fails_with(
        &["query", "--data", "gs://bucket/x", "SELECT 1"],
        "only local directories and s3:// locations",
    );
    fails_with(
        &[
            "query", "--data", HANDMADE, "SELECT 1", "--format", "parquet",
        ],
        "--format parquet needs --output FILE",
    );
    fails_with(&["tables", "--data", "/no/such/dir"], "does not exist");
}

#[test]
fn a_file_with_a_wrong_column_type_is_quarantined_or_with_strict_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let csv = dir.path().join("bad.csv");
    // valid_from is fine, but this file was written with text prices.
    let bad_parquet = dir.path().join("model_prices/2026/bad.parquet");
    std::fs::create_dir_all(bad_parquet.parent().unwrap()).unwrap();
    std::fs::write(&csv, "model,valid_from,input_usd_per_mtok,output_usd_per_mtok\nm,2026-01-01T00:00:00Z,cheap,1.0\n").unwrap();
    // Write the mistyped file with the CLI itself: a query that produces text prices.
    ok(tokenledger(
        &[
            "query",
            "--data",
            HANDMADE,
            "--format",
            "parquet",
            "--output",
            bad_parquet.to_str().unwrap(),
            "SELECT 'm' AS model, TIMESTAMP '2026-01-01T00:00:00Z' AS valid_from, 'cheap' AS input_usd_per_mtok, 1.0 AS output_usd_per_mtok",
        ],
        &[],
    ));
    // By default the file is quarantined: the query answers from the other files (none here),
    // and one warning names the file and the column.
    let out = tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM model_prices",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(ok(out), "n\n0\n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("WARN")
            && stderr.contains("model_prices/2026/bad.parquet")
            && stderr.contains("\"input_usd_per_mtok\" has type Utf8"),
        "{stderr}"
    );
    let files = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT status, error FROM tokenledger_files",
        ],
        &[],
    ));
    assert!(files.starts_with("status,error\nquarantined,"), "{files}");
    // --strict makes it the query's error instead.
    fails_with(
        &[
            "query",
            "--strict",
            "--data",
            data,
            "SELECT * FROM model_prices",
        ],
        "model_prices file",
    );
    let out = tokenledger(
        &[
            "query",
            "--strict",
            "--data",
            data,
            "SELECT * FROM model_prices",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model_prices/2026/bad.parquet")
            && stderr.contains("\"input_usd_per_mtok\" has type Utf8"),
        "{stderr}"
    );
    // The importer refuses the same mistake up front, naming the column.
    let out = tokenledger(
        &[
            "import",
            "--data",
            data,
            "--table",
            "model_prices",
            csv.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
}

#[test]
fn datafusion_settings_can_be_set_through_the_environment() {
    let setting = |env: &[(&str, &str)]| {
        let sql = "SELECT value FROM information_schema.df_settings \
                   WHERE name = 'datafusion.execution.parquet.pushdown_filters'";
        ok(tokenledger(
            &["query", "--data", HANDMADE, "--format", "csv", sql],
            env,
        ))
    };
    // tokenledger's own choice, then the variable's.
    assert_eq!(setting(&[]), "value\nfalse\n");
    assert_eq!(
        setting(&[("DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS", "true")]),
        "value\ntrue\n"
    );
    fails_with_env(
        &["query", "--data", HANDMADE, "SELECT 1"],
        &[("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "many")],
        "environment variable DATAFUSION_EXECUTION_TARGET_PARTITIONS=\"many\"",
    );
}

#[test]
fn output_formats() {
    let sql = "SELECT workflow, count(*) AS items, sum(value_usd) AS value FROM outcomes GROUP BY workflow ORDER BY workflow";
    let csv = ok(tokenledger(
        &["query", "--data", HANDMADE, "--format", "csv", sql],
        &[],
    ));
    assert_eq!(
        csv,
        "workflow,items,value\ninvoice,5,14.0\nsupport_ticket,7,54.0\n"
    );
    let json = ok(tokenledger(
        &["query", "--data", HANDMADE, "--format", "json", sql],
        &[],
    ));
    assert_eq!(
        json,
        "{\"workflow\":\"invoice\",\"items\":5,\"value\":14.0}\n{\"workflow\":\"support_ticket\",\"items\":7,\"value\":54.0}\n"
    );
    let table = ok(tokenledger(&["query", "--data", HANDMADE, sql], &[]));
    assert!(
        table.contains("| support_ticket | 7     | 54.0  |"),
        "{table}"
    );

    // Parquet round trip: read back with the parquet crate, not with tokenledger.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.parquet");
    ok(tokenledger(
        &[
            "query",
            "--data",
            HANDMADE,
            "--format",
            "parquet",
            "-o",
            file.to_str().unwrap(),
            sql,
        ],
        &[],
    ));
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap();
    // Checksummed like every file tokenledger writes.
    let key_value = builder.metadata().file_metadata().key_value_metadata();
    assert!(
        key_value
            .unwrap()
            .iter()
            .any(|kv| kv.key == "tokenledger.checksums"),
        "{key_value:?}"
    );
    let reader = builder.build().unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("| invoice        | 5     | 14.0  |"),
        "{text}"
    );
}

#[test]
fn sql_from_a_file_from_stdin_and_several_statements() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "SELECT count(*) AS n FROM spans;\nSELECT count(*) AS n FROM outcomes;\n",
    )
    .unwrap();
    let out = ok(tokenledger(
        &[
            "query",
            "--data",
            HANDMADE,
            "--format",
            "csv",
            "-f",
            file.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(out, "n\n60\nn\n12\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["query", "--data", HANDMADE, "--format", "csv"])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT max(attempt) AS m FROM spans")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "m\n3\n");
}

#[test]
fn tables_lists_rows_files_and_bytes() {
    let out = ok(tokenledger(&["tables", "--data", HANDMADE], &[]));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let summary: Vec<(&str, &str, &str)> = lines.iter().map(|l| (l[0], l[1], l[2])).collect();
    assert_eq!(
        summary,
        [
            ("spans", "60", "1"),
            ("outcomes", "12", "1"),
            ("model_prices", "7", "1"),
            ("baselines", "2", "1")
        ]
    );
    let bytes: u64 = lines[0][3].parse().unwrap();
    assert_eq!(
        bytes,
        std::fs::metadata(repo_root().join("testdata/handmade/spans/spans.parquet"))
            .unwrap()
            .len()
    );
}

#[test]
fn committed_handmade_parquet_matches_its_csv_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for table in ["spans", "outcomes", "model_prices", "baselines"] {
        let csv = repo_root().join(format!("testdata/handmade/csv/{table}.csv"));
        ok(tokenledger(
            &[
                "import",
                "--data",
                data,
                "--table",
                table,
                csv.to_str().unwrap(),
            ],
            &[],
        ));
        let sql = format!("SELECT * FROM {table} ORDER BY 1, 2, 3");
        let fresh = ok(tokenledger(
            &["query", "--data", data, "--format", "csv", &sql],
            &[],
        ));
        let committed = ok(tokenledger(
            &["query", "--data", HANDMADE, "--format", "csv", &sql],
            &[],
        ));
        assert_eq!(
            fresh, committed,
            "{table}: re-import testdata/handmade/csv/{table}.csv"
        );
    }
}

#[test]
fn generated_data_matches_an_independent_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    ok(tokenledger(
        &["gen", "--out", data, "--work-items", "2000", "--seed", "11"],
        &[],
    ));
    let ours = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT workflow, count(*) AS spans, sum(input_tokens) AS input_tokens, round(sum(cost_usd), 6) AS cost FROM spans GROUP BY 1 ORDER BY 1",
        ],
        &[],
    ));
    let Some(theirs) = duckdb_csv(
        "SELECT workflow, count(*) AS spans, sum(input_tokens) AS input_tokens, round(sum(cost_usd), 6) AS cost \
         FROM read_parquet('spans/**/*.parquet') GROUP BY 1 ORDER BY 1",
        dir.path(),
    ) else {
        return;
    };
    assert_eq!(ours, theirs);
    assert_eq!(ours.lines().count(), 5, "four workflows: {ours}");
}

#[test]
fn functions_are_listed_with_their_syntax() {
    let out = ok(tokenledger(&["functions"], &[]));
    for syntax in [
        "effective_cost(base_cost, p)",
        "break_even_rate(cost_per_attempt, unit_price)",
        "attention_cost_ratio(context_tokens, reference_tokens)",
        "token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens, \
         cache_write_1h_input_tokens, output_tokens, reasoning_tokens, service_tier, at)",
        "cost_per_outcome(cost, succeeded)",
        "marginal_token_utility(value, cost)",
    ] {
        assert!(out.contains(syntax), "{syntax} missing from:\n{out}");
    }
}

#[test]
fn litellm_prices_import_and_reprice_calls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let json = dir.path().join("prices.json");
    std::fs::write(
        &json,
        r#"{"sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
            "tiny-model": {"input_cost_per_token": 2e-7, "cache_read_input_token_cost": 5e-8,
                           "cache_creation_input_token_cost": 2.5e-7,
                           "input_cost_per_token_batches": 1e-7, "output_cost_per_token_batches": 4e-7,
                           "input_cost_per_token_above_200k_tokens": 4e-7,
                           "output_cost_per_token_above_200k_tokens": 1.6e-6,
                           "output_cost_per_token": 8e-7, "litellm_provider": "acme", "mode": "chat"}}"#,
    )
    .unwrap();
    ok(tokenledger(
        &[
            "prices",
            "import",
            "--data",
            data,
            "--litellm",
            json.to_str().unwrap(),
            "--valid-from",
            "2026-03-01",
        ],
        &[],
    ));
    let prices = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT * FROM model_prices \
             ORDER BY service_tier NULLS FIRST, above_input_tokens NULLS FIRST",
        ],
        &[],
    ));
    // Batch and above 200k give input and output only: their cache rates are the standard ones
    // scaled as input is (x 0.5, x 2).
    assert_eq!(
        prices,
        "provider,model,valid_from,input_usd_per_mtok,cached_input_usd_per_mtok,output_usd_per_mtok,\
         reasoning_usd_per_mtok,service_tier,above_input_tokens,cache_write_usd_per_mtok,\
         cache_write_1h_usd_per_mtok\n\
         acme,tiny-model,2026-03-01T00:00:00Z,0.2,0.05,0.8,,,,0.25,\n\
         acme,tiny-model,2026-03-01T00:00:00Z,0.4,0.1,1.6,,,200000,0.5,\n\
         acme,tiny-model,2026-03-01T00:00:00Z,0.1,0.025,0.4,,batch,,0.125,\n"
    );
    // 1,000 input (400 cached) and 100 output: 600 x 0.2 + 400 x 0.05 + 100 x 0.8 = 220 µ$; NULL
    // before March. At batch with 300 of the input written to cache:
    // 300 x 0.1 + 400 x 0.025 + 300 x 0.125 + 100 x 0.4 = 117.5 µ$.
    let cost = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT round(token_cost('tiny-model', 1000, 400, 100, 0, TIMESTAMP '2026-03-02T00:00:00Z'), 12) AS after, \
                    token_cost('tiny-model', 1000, 400, 100, 0, TIMESTAMP '2026-02-28T00:00:00Z') AS before, \
                    round(token_cost('tiny-model', 1000, 400, 300, 0, 100, 0, 'batch', \
                                     TIMESTAMP '2026-03-02T00:00:00Z'), 12) AS batch",
        ],
        &[],
    ));
    assert_eq!(cost, "after,before,batch\n0.00022,,0.0001175\n");
    let out = tokenledger(
        &[
            "prices",
            "import",
            "--data",
            data,
            "--litellm",
            json.to_str().unwrap(),
            "--valid-from",
            "March",
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--valid-from \"March\": expected YYYY-MM-DD")
    );
}

#[test]
fn reports_are_listed_and_run() {
    let list = ok(tokenledger(&["report"], &[]));
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // Every file in sql/reports/ whose header does not call it a building block.
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("sql/reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .starts_with("-- Building block:")
        })
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    files.sort();
    let mut listed = names.clone();
    listed.sort();
    assert_eq!(listed, files);
    assert_eq!(names.len(), 9);
    assert!(
        list.lines().all(|l| l.len() > 40),
        "each report has a one-line summary:\n{list}"
    );

    let csv = ok(tokenledger(
        &[
            "report",
            "allocation",
            "--data",
            HANDMADE,
            "--format",
            "csv",
        ],
        &[],
    ));
    let decisions: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(decisions, ["cap spend", "outsource to BPO"], "{csv}");
    fails_with(
        &["report", "nonsense", "--data", HANDMADE],
        "unknown report \"nonsense\"; reports are cost_per_outcome",
    );
}

#[test]
fn serve_on_all_interfaces_without_users_only_refuses() {
    let output = tokenledger(
        &[
            "serve",
            "--data",
            "testdata/handmade",
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The refusal alone: nothing announced as served.
    assert!(
        stderr.starts_with("error: refusing to listen on 0.0.0.0:0 without --users"),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "{stderr}");
}
