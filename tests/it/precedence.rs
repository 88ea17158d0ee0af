//! Operator precedence checked against DuckDB: `IS [NOT] DISTINCT FROM`, `IS [NOT] NULL`,
//! `LIKE`, `BETWEEN` and `IN` beside `AND`, `OR` and `NOT`, written without parentheses, over
//! every combination of true, false and NULL. The pinned SQL parser reads
//! `a IS DISTINCT FROM b AND c` as `a IS DISTINCT FROM (b AND c)`; tokenledger corrects it
//! (engine/src/parse.rs), and every expression here must answer as DuckDB does.

use std::process::Command;

use crate::peers::{duckdb_csv, repo_root};

/// The expressions compared, each written as an analyst would, without parentheses.
const EXPRESSIONS: [&str; 30] = [
    "a IS DISTINCT FROM b AND c",
    "a IS NOT DISTINCT FROM b AND c",
    "a IS DISTINCT FROM b OR c",
    "a IS NOT DISTINCT FROM b OR c AND a",
    "a AND b IS DISTINCT FROM c",
    "a OR b IS NOT DISTINCT FROM c",
    "NOT a IS DISTINCT FROM b",
    "NOT a IS NOT DISTINCT FROM b AND c",
    "a IS DISTINCT FROM (b AND c)",
    "a IS DISTINCT FROM b AND c IS NOT DISTINCT FROM a",
    "a IS NULL AND b",
    "a IS NOT NULL OR b AND c",
    "NOT a IS NULL",
    "a AND b IS NULL",
    "s LIKE 'x%' AND b",
    "s LIKE 'x%' OR b",
    "NOT s LIKE 'x%' AND c",
    "a AND s NOT LIKE 'y%'",
    "n BETWEEN 1 AND 3 AND a",
    "NOT n BETWEEN 1 AND 3 OR c",
    "a OR n NOT BETWEEN 1 AND 3",
    "n IN (2, 7) AND c",
    "NOT n IN (2) OR a",
    "a AND n NOT IN (5)",
    "(a IS DISTINCT FROM b) = c",
    "c AND a IS DISTINCT FROM b OR c",
    "c OR a IS NOT DISTINCT FROM b AND c",
    "NOT a IS DISTINCT FROM b OR c",
    "c AND NOT a IS NOT DISTINCT FROM b OR a AND c",
    "a IS DISTINCT FROM b OR c OR a AND b",
];

/// The query both engines run: every expression as a column, over the 27 rows of a, b, c in
/// {true, false, NULL}, with text and number columns derived from them.
fn query() -> String {
    let columns: Vec<String> = EXPRESSIONS
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS e{i}"))
        .collect();
    format!(
        "WITH v(x) AS (VALUES (true), (false), (CAST(NULL AS BOOLEAN))), \
         t AS (SELECT a.x AS a, b.x AS b, c.x AS c, \
                      CASE WHEN a.x THEN 'x1' WHEN NOT a.x THEN 'y1' END AS s, \
                      CASE WHEN b.x THEN 2 WHEN NOT b.x THEN 5 END AS n \
               FROM v a CROSS JOIN v b CROSS JOIN v c) \
         SELECT CAST(a AS VARCHAR) AS a, CAST(b AS VARCHAR) AS b, CAST(c AS VARCHAR) AS c, {} \
         FROM t ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 3 NULLS FIRST",
        columns.join(", ")
    )
}

/// CSV lines with booleans as `true`/`false` and NULL as nothing, header left out.
fn normalized(csv: &str) -> Vec<String> {
    csv.lines()
        .skip(1)
        .map(|line| line.to_ascii_lowercase())
        .collect()
}

#[test]
fn precedence_without_parentheses_answers_as_duckdb_does() {
    let sql = query();
    let Some(duckdb) = duckdb_csv(&sql, &repo_root()) else {
        assert!(
            std::env::var_os("TOKENLEDGER_REQUIRE_PEERS").is_none(),
            "DuckDB is not installed (scripts/test.sh installs it)"
        );
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["query", "--data", "testdata/handmade", "--format", "csv"])
        .arg(&sql)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = normalized(&String::from_utf8_lossy(&out.stdout));
    let theirs = normalized(&duckdb);
    assert_eq!(ours.len(), 27, "{ours:?}");
    for (row, (mine, duck)) in ours.iter().zip(&theirs).enumerate() {
        let (mine, duck): (Vec<&str>, Vec<&str>) =
            (mine.split(',').collect(), duck.split(',').collect());
        for (column, (m, d)) in mine.iter().zip(&duck).enumerate().skip(3) {
            assert_eq!(
                m,
                d,
                "row {row} (a, b, c = {}, {}, {}): {} gives {m}, DuckDB {d}",
                mine[0],
                mine[1],
                mine[2],
                EXPRESSIONS[column - 3]
            );
        }
    }
}
