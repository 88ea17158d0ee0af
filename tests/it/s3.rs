//! The same commands against a real S3-compatible server on 127.0.0.1.

use crate::peers::{S3Server, ok, tokenledger};

const GROUP_BY_WORKFLOW: &str =
    "SELECT workflow, count(*), sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1";

#[test]
fn gen_and_query_give_identical_results_on_local_disk_and_s3() {
    let Some(server) = S3Server::start("traces") else {
        return;
    };
    let env = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let local = tempfile::tempdir().unwrap();
    let local = local.path().to_str().unwrap();
    let s3 = "s3://traces/acme/prod";

    ok(tokenledger(
        &["gen", "--out", local, "--work-items", "3000", "--seed", "9"],
        &[],
    ));
    ok(tokenledger(
        &["gen", "--out", s3, "--work-items", "3000", "--seed", "9"],
        &env,
    ));

    let on_disk = ok(tokenledger(
        &[
            "query",
            "--data",
            local,
            "--format",
            "csv",
            GROUP_BY_WORKFLOW,
        ],
        &[],
    ));
    let on_s3 = ok(tokenledger(
        &["query", "--data", s3, "--format", "csv", GROUP_BY_WORKFLOW],
        &env,
    ));
    assert_eq!(on_disk, on_s3);
    assert_eq!(on_disk.lines().count(), 5, "{on_disk}");

    // Row and file counts agree too (bytes do as well: same seed, same files).
    let tables_disk = ok(tokenledger(&["tables", "--data", local], &[]));
    let tables_s3 = ok(tokenledger(&["tables", "--data", s3], &env));
    assert_eq!(tables_disk, tables_s3);

    // Data a pipeline drops into a sub-folder of the bucket is read as well.
    let csv_dir = tempfile::tempdir().unwrap();
    let csv = csv_dir.path().join("late.csv");
    std::fs::write(&csv, "workflow,bpo_unit_price_usd\nlate_workflow,2.5\n").unwrap();
    ok(tokenledger(
        &[
            "import",
            "--data",
            s3,
            "--table",
            "baselines",
            csv.to_str().unwrap(),
        ],
        &env,
    ));
    let late = ok(tokenledger(
        &[
            "query",
            "--data",
            s3,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM baselines",
        ],
        &env,
    ));
    assert_eq!(late, "n\n5\n");
}

#[test]
fn wrong_s3_credentials_are_a_clear_error() {
    let Some(server) = S3Server::start("locked") else {
        return;
    };
    let mut env = server.env();
    env[1].1 = "not-the-secret".into();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = tokenledger(
        &[
            "query",
            "--data",
            "s3://locked/x",
            "SELECT count(*) FROM spans",
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SignatureDoesNotMatch")
            || stderr.contains("Access Denied")
            || stderr.contains("403"),
        "{stderr}"
    );
}

/// Compaction into a Delta table on S3 (commits are conditional puts on SeaweedFS), landing
/// cleanup, and time travel.
#[test]
fn compact_on_s3_keeps_the_totals_and_a_rerun_does_nothing() {
    let Some(server) = S3Server::start("curated") else {
        return;
    };
    let env = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s3 = "s3://curated/acme";
    ok(tokenledger(
        &["gen", "--out", s3, "--work-items", "2000", "--seed", "4"],
        &env,
    ));
    let before = ok(tokenledger(
        &["query", "--data", s3, "--format", "csv", GROUP_BY_WORKFLOW],
        &env,
    ));
    let compact = || {
        ok(tokenledger(
            &[
                "compact",
                "--data",
                s3,
                "--table",
                "spans",
                "--min-age",
                "0",
            ],
            &env,
        ))
    };
    let first = compact();
    assert!(first.contains("-> curated versions 0"), "{first}");
    let again = compact();
    assert!(again.contains("nothing to compact"), "{again}");
    // With no grace left, the absorbed landing files go; the totals stay.
    let cleaned = tokenledger(
        &[
            "compact",
            "--data",
            s3,
            "--table",
            "spans",
            "--min-age",
            "0",
            "--grace",
            "0",
        ],
        &env,
    );
    let cleaned_err = String::from_utf8_lossy(&cleaned.stderr).to_string();
    ok(cleaned);
    assert!(
        cleaned_err.contains("deleted 4 landing files"),
        "{cleaned_err}"
    );
    let after = ok(tokenledger(
        &["query", "--data", s3, "--format", "csv", GROUP_BY_WORKFLOW],
        &env,
    ));
    assert_eq!(before, after, "the same totals from the curated table");
    let as_of = ok(tokenledger(
        &[
            "query",
            "--data",
            s3,
            "--format",
            "csv",
            "SELECT workflow, count(*), sum(input_tokens) FROM spans_at(0) GROUP BY 1 ORDER BY 1",
        ],
        &env,
    ));
    // The same rows; only the header names the table function.
    let rows = |csv: &str| csv.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(rows(&before), rows(&as_of));
}
