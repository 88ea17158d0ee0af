//! Runs the SQL tests in `sql/tests/*.slt` (sqllogictest format, as apache/datafusion does)
//! against tokenledger's own session over the hand-made data set.
//!
//! Floating-point results are shown as DataFusion's own runner shows them: rounded to 12
//! decimal places, trailing zeros dropped, so expected values need no `round()`.
//! `TOKENLEDGER_SLT_COMPLETE=1 cargo test -p tokenledger-engine --test it slt` rewrites the
//! expected results in place from what the engine answers (then review the diff).

use crate::slt_db::{normalize_float, run_slt_files};
use crate::support::{open, repo_root};

#[test]
fn floats_are_shown_rounded_to_12_places() {
    assert_eq!(normalize_float("0.30000000000000004"), "0.3");
    assert_eq!(normalize_float("0.3333333333333333"), "0.333333333333");
    assert_eq!(normalize_float("1234.5"), "1234.5");
    assert_eq!(normalize_float("2.0"), "2");
    assert_eq!(normalize_float("-0.0000000000001"), "0");
    assert_eq!(normalize_float("1e-7"), "0.0000001");
    assert_eq!(normalize_float("NULL"), "NULL");
    assert_eq!(normalize_float("NaN"), "NaN");
}

#[tokio::test]
async fn sql_logic_tests() {
    let failures = run_slt_files(&repo_root(), || async {
        open(&repo_root().join("testdata/handmade")).await
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} .slt files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
