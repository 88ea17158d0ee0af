//! The log scan (#43): every command that takes credentials, run with them at the most verbose
//! log level tokenledger has, and everything it prints searched for them.

use crate::distributed::{TEST_CLUSTER_SECRET, WorkerProcess};
use crate::peers::{S3_SECRET, S3Server, tokenledger};

/// Runs `args`; fails when it fails or prints any of `secrets`; returns what it printed.
fn run_and_scan(args: &[&str], env: &[(&str, &str)], secrets: &[&str]) -> String {
    let output = tokenledger(args, env);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{args:?} failed:\n{printed}");
    for secret in secrets {
        assert!(
            !printed.contains(secret),
            "{args:?} printed a secret:\n{printed}"
        );
    }
    printed
}

#[test]
fn no_command_prints_the_credentials_it_was_given() {
    let Some(server) = S3Server::start("secrets") else {
        return;
    };
    let mut env = server.env();
    env.push(("TOKENLEDGER_LOG", "debug".to_string()));
    env.push((
        "TOKENLEDGER_CLUSTER_SECRET",
        TEST_CLUSTER_SECRET.to_string(),
    ));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let secrets = [S3_SECRET, TEST_CLUSTER_SECRET];
    let data = "s3://secrets/lake";
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.csv");
    std::fs::write(
        &prices,
        "model,valid_from,input_usd_per_mtok,output_usd_per_mtok\nclaude-sonnet-4-5,2020-01-01,3,15\n",
    )
    .unwrap();
    let focus = dir.path().join("focus.csv");
    let (prices, focus) = (prices.to_str().unwrap(), focus.to_str().unwrap());
    let commands: [&[&str]; 8] = [
        &["gen", "--out", data, "--work-items", "200", "--seed", "5"],
        &["import", "--data", data, "--table", "model_prices", prices],
        &["query", "--data", data, "SELECT count(*) FROM spans"],
        &["report", "cost_per_outcome", "--data", data],
        &["tables", "--data", data],
        &["compact", "--data", data, "--min-age", "0"],
        &[
            "export",
            "focus",
            "--data",
            data,
            "--from",
            "2020-01-01",
            "--to",
            "2030-01-01",
            "--out",
            focus,
        ],
        &["functions"],
    ];
    for args in commands {
        let printed = run_and_scan(args, &env_refs, &secrets);
        // The scan read a verbose log, not silence.
        assert!(
            printed.contains("DEBUG") || args == ["functions"],
            "{args:?}:\n{printed}"
        );
    }
    // A worker and a coordinator of a cluster, over the same bucket.
    let worker = WorkerProcess::start(data, &env);
    let sql = "SELECT workflow, count(*) FROM spans GROUP BY 1";
    let query = [
        "query",
        "--data",
        data,
        "--workers",
        &worker.address,
        "--partition-bytes",
        "1",
        sql,
    ];
    run_and_scan(&query, &env_refs, &secrets);
    let log = worker.log();
    assert!(log.contains("DEBUG"), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "the worker printed a secret:\n{log}");
    }
}
