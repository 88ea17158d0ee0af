//! `tokenledger functions`: the token-economics SQL functions with syntax and meaning.

use crate::error::CliError;

/// Prints every function of `tokenledger_udfs` with its syntax and description.
pub fn run() -> Result<(), CliError> {
    for (name, kind, doc) in tokenledger_udfs::catalog() {
        println!(
            "{name} ({kind})\n  {}\n  {}\n",
            doc.syntax_example, doc.description
        );
    }
    Ok(())
}
