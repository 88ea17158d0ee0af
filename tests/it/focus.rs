//! `tokenledger export focus`: the file passes the FinOps Foundation's FOCUS validator, and its
//! costs add up to the spans' cost computed by DuckDB straight from the Parquet files.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{duckdb_csv, ok, repo_root, tokenledger};

/// The sample's range, cut so it starts and ends mid-data and spans gpt-4.1-mini's price change
/// on 2026-02-01.
const FROM: &str = "2026-01-20";
const TO: &str = "2026-02-14";

/// The validator's site-packages: it reads its currency codes by a path relative to there.
fn validator() -> Option<(PathBuf, PathBuf)> {
    let venv = repo_root().join(".venv-focus");
    let program = venv.join("bin/focus-validator");
    let site = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("focus_validator").exists());
    match site {
        Some(site) if program.exists() => Some((program, site)),
        _ => {
            assert!(
                std::env::var_os("TOKENLEDGER_REQUIRE_PEERS").is_none(),
                "the FOCUS validator is not installed in .venv-focus (scripts/test.sh installs it)"
            );
            None
        }
    }
}

/// The validator's verdict on `file` (its exit code is 0 either way: the text says).
fn validate(file: &Path) -> Option<String> {
    let (program, site) = validator()?;
    let out = Command::new(program)
        .args([
            "--data-file",
            file.to_str().unwrap(),
            "--validate-version",
            "1.0",
        ])
        .current_dir(site)
        .output()
        .unwrap();
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn export(out: &Path) {
    ok(tokenledger(
        &[
            "export",
            "focus",
            "--from",
            FROM,
            "--to",
            TO,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    ));
}

#[test]
fn the_focus_csv_passes_the_finops_foundation_validator() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("focus.csv");
    export(&csv);
    let Some(verdict) = validate(&csv) else {
        return;
    };
    assert!(
        verdict.contains("Validation succeeded.") && !verdict.contains("failed"),
        "{verdict}"
    );
    // The validator does check: the same file without its BilledCost column fails.
    let text = std::fs::read_to_string(&csv).unwrap();
    let broken = dir.path().join("broken.csv");
    std::fs::write(&broken, text.replacen("BilledCost,", "BilledCostX,", 1)).unwrap();
    let verdict = validate(&broken).unwrap();
    assert!(verdict.contains("BilledCost_Required failed"), "{verdict}");
}

#[test]
fn focus_costs_add_up_to_the_spans_cost_computed_by_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    export(&dir.path().join("focus.parquet"));
    // DuckDB runs in the export's directory, with the sample linked beside the export.
    std::os::unix::fs::symlink(
        repo_root().join("testdata/sample"),
        dir.path().join("sample"),
    )
    .unwrap();
    // Each span's cost: cost_usd, else its tokens priced by the model's price row in force at
    // its start (an as-of join), cached input and reasoning at their own rates when given.
    let spans_sql = format!(
        "WITH s AS (
             SELECT *, greatest(coalesce(input_tokens, 0), 0) AS i, greatest(coalesce(output_tokens, 0), 0) AS o
             FROM read_parquet('sample/spans/**/*.parquet')
             WHERE start_time >= '{FROM} 00:00:00+00'::TIMESTAMPTZ
               AND start_time < '{TO} 00:00:00+00'::TIMESTAMPTZ + INTERVAL 1 DAY),
         t AS (SELECT *, least(greatest(coalesce(cached_input_tokens, 0), 0), i) AS c,
                         least(greatest(coalesce(reasoning_tokens, 0), 0), o) AS r FROM s),
         priced AS (
             SELECT t.*, ((t.i - t.c) * p.input_usd_per_mtok
                          + t.c * coalesce(p.cached_input_usd_per_mtok, p.input_usd_per_mtok)
                          + (t.o - t.r) * p.output_usd_per_mtok
                          + t.r * coalesce(p.reasoning_usd_per_mtok, p.output_usd_per_mtok)) / 1e6 AS list
             FROM t ASOF LEFT JOIN read_parquet('sample/model_prices/**/*.parquet') p
               ON t.model = p.model AND t.start_time >= p.valid_from)
         SELECT round(sum(coalesce(cost_usd, list)), 9) AS cost,
                round(sum(CASE WHEN cost_usd IS NULL THEN list END), 9) AS token_cost,
                sum(CASE WHEN cost_usd IS NOT NULL OR list IS NOT NULL THEN i - c END) AS input_tokens,
                sum(CASE WHEN cost_usd IS NOT NULL OR list IS NOT NULL THEN r END) AS reasoning_tokens
         FROM priced"
    );
    let focus_sql = "SELECT round(sum(BilledCost), 9) AS cost,
                round(sum(BilledCost) FILTER (WHERE x_PricedBy = 'token_cost'), 9) AS token_cost,
                CAST(sum(ConsumedQuantity) FILTER (WHERE x_TokenType = 'input') AS BIGINT) AS input_tokens,
                CAST(sum(ConsumedQuantity) FILTER (WHERE x_TokenType = 'reasoning') AS BIGINT) AS reasoning_tokens
         FROM read_parquet('focus.parquet')";
    let (Some(spans), Some(focus)) = (
        duckdb_csv(&spans_sql, dir.path()),
        duckdb_csv(focus_sql, dir.path()),
    ) else {
        return;
    };
    assert_eq!(focus, spans);
    let numbers: Vec<f64> = spans
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        numbers.iter().all(|n| *n > 0.0),
        "the range has costs of each kind: {spans}"
    );

    // One row per day, provider, SKU, sub account, tier, token type and pricing method; each a day.
    let grain = duckdb_csv(
        "SELECT count(*) = count(DISTINCT (ChargePeriodStart, Provider, SkuId, SubAccountId, x_ServiceTier, x_TokenType, x_PricedBy)),
                bool_and(ChargePeriodEnd - ChargePeriodStart = INTERVAL 1 DAY),
                min(ChargePeriodStart)::DATE, max(ChargePeriodStart)::DATE,
                bool_and(abs(ListCost - ListUnitPrice * PricingQuantity) <= 1e-12 + 1e-9 * ListCost)
         FROM read_parquet('focus.parquet')",
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        grain.lines().nth(1).unwrap(),
        format!("True,True,{FROM},{TO},True")
    );
}

#[test]
fn bad_export_arguments_get_clear_errors() {
    for ((from, to, out), expected) in [
        (
            ("2026-02-01", "2026-01-01", "x.csv"),
            "ends (2026-01-01) before it starts (2026-02-01)",
        ),
        (
            ("2026-02-01", "2026-02-02", "x.json"),
            "name a .parquet or .csv file",
        ),
        (
            ("2026-02-30", "2026-03-01", "x.csv"),
            "\"2026-02-30\" is not a date",
        ),
    ] {
        let output = tokenledger(
            &["export", "focus", "--from", from, "--to", to, "--out", out],
            &[],
        );
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Cache reads and writes are charges of their own, at their tier's rates: the companion set
/// `testdata/cache-tiers` (HAND_CALC.md, "Cache writes, tiers and long context") exported and
/// read back by DuckDB. The file passes the validator too.
#[test]
fn cache_reads_and_writes_are_their_own_charge_rows_at_their_tiers_rates() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("focus.csv");
    ok(tokenledger(
        &[
            "export",
            "focus",
            "--data",
            "testdata/cache-tiers",
            "--from",
            "2026-01-12",
            "--to",
            "2026-01-12",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[],
    ));
    let Some(rows) = duckdb_csv(
        "SELECT SkuId, x_ServiceTier, x_TokenType, CAST(ConsumedQuantity AS BIGINT) AS tokens,
                round(ListCost, 9) AS list, round(ListUnitPrice, 9) AS rate, x_PricedBy
         FROM read_csv('focus.csv')
         WHERE x_TokenType IN ('cached input', 'cache write', 'cache write 1h') OR x_PricedBy = 'unpriced'
         ORDER BY ALL",
        dir.path(),
    ) else {
        return;
    };
    // By hand: sonnet standard reads C2 6,000 + C5 50,000, of which 6,000 at 0.30 and 50,000 at
    // the long-context 0.60 (31,800 µ$); writes C1 6,000 + C3 3,000 at 3.75; C3's 1,000 1-hour
    // writes at 6.00; batch C4 2,000 reads at 0.15, 4,000 writes at 1.875; opus 10,000 writes at
    // 18.75; C7 at flex has no price: its tokens are there, unpriced, at no cost.
    assert_eq!(
        rows,
        "SkuId,x_ServiceTier,x_TokenType,tokens,list,rate,x_PricedBy\n\
         claude-opus-4-1,standard,cache write,10000,0.1875,18.75,token_cost\n\
         claude-sonnet-4-5,batch,cache write,4000,0.0075,1.875,token_cost\n\
         claude-sonnet-4-5,batch,cached input,2000,0.0003,0.15,token_cost\n\
         claude-sonnet-4-5,flex,input,1000,0.0,,unpriced\n\
         claude-sonnet-4-5,flex,output,100,0.0,,unpriced\n\
         claude-sonnet-4-5,standard,cache write,9000,0.03375,3.75,token_cost\n\
         claude-sonnet-4-5,standard,cache write 1h,1000,0.006,6.0,token_cost\n\
         claude-sonnet-4-5,standard,cached input,56000,0.0318,0.567857143,token_cost\n"
    );
    if let Some(verdict) = validate(&csv) {
        assert!(
            verdict.contains("Validation succeeded.") && !verdict.contains("failed"),
            "{verdict}"
        );
    }
}
