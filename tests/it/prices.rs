//! Prices against an independent oracle: pydantic's `genai-prices` package prices random calls
//! (cache reads and writes, 1-hour writes, reasoning, service tiers, long prompts, dates across
//! price changes) and `token_cost`, over the same package's data imported with
//! `tokenledger prices import --genai-prices`, must agree on every call.

use std::process::Command;

use crate::peers::{ok, repo_root, tokenledger, venv_python};

/// Calls the oracle prices.
const CALLS: usize = 1_500;
const PROVIDERS: [&str; 3] = ["anthropic", "openai", "google"];

fn run_python(python: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn token_cost_agrees_with_genai_prices_on_every_call() {
    let Some(python) = venv_python(".venv-prices") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let json = dir.path().join("genai-prices.json");
    let calls = dir.path().join("calls.csv");
    // The package's prices as its published data.json, imported as a user would.
    let published = run_python(&python, &["scripts/genai_prices_json.py"]);
    std::fs::write(&json, published).unwrap();
    let mut import = vec![
        "prices",
        "import",
        "--data",
        data.to_str().unwrap(),
        "--genai-prices",
        json.to_str().unwrap(),
        "--valid-from",
        "2024-01-01",
    ];
    for provider in PROVIDERS {
        import.extend(["--provider", provider]);
    }
    ok(tokenledger(&import, &[]));
    // The oracle's calls and prices, from the package itself (not from the file above).
    let mut oracle = vec![
        "tests/python/genai_prices_oracle.py",
        calls.to_str().unwrap(),
        "1500",
        "7",
    ];
    oracle.extend(PROVIDERS);
    assert_eq!(CALLS.to_string(), oracle[2]);
    run_python(&python, &oracle);

    let sql = format!(
        "CREATE EXTERNAL TABLE calls STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true'); \
         SELECT id, model, service_tier, cache_write_input_tokens > 0 AS writes, \
                cache_write_1h_input_tokens > 0 AS hour_writes, long_context, expected_usd, \
                token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens, \
                           cache_write_1h_input_tokens, output_tokens, reasoning_tokens, \
                           service_tier, CAST(at AS TIMESTAMP)) AS ours \
         FROM calls ORDER BY id",
        calls.display()
    );
    let answer = ok(tokenledger(
        &[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "csv",
            &sql,
        ],
        &[],
    ));
    let mut rows = 0;
    let (mut writes, mut hour_writes, mut long, mut tiered) = (0, 0, 0, 0);
    let mut disagreements = Vec::new();
    for line in answer.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        rows += 1;
        writes += usize::from(f[3] == "true");
        hour_writes += usize::from(f[4] == "true");
        long += usize::from(f[5] == "true");
        tiered += usize::from(f[2] != "standard");
        let expected: f64 = f[6].parse().unwrap();
        let ours: Option<f64> = f[7].parse().ok();
        let agrees = ours.is_some_and(|ours| {
            (ours - expected).abs() <= 1e-9 * expected.abs() || (ours == 0.0 && expected == 0.0)
        });
        if !agrees {
            disagreements.push(line.to_string());
        }
    }
    assert_eq!(rows, CALLS);
    assert!(
        disagreements.is_empty(),
        "{} of {rows} calls priced differently (id,model,tier,…,genai-prices,token_cost):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // The draw reached every kind of price.
    assert!(
        writes >= 300 && hour_writes >= 100 && long >= 100 && tiered >= 300,
        "writes {writes}, 1-hour writes {hour_writes}, long context {long}, tiers {tiered}"
    );
}
