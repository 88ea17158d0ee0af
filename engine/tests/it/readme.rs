//! The README's column tables agree with the schema in code (the source of truth): the same
//! columns in the same order, each with its type and whether it is required.

use tokenledger_engine::schema::{ColumnType, TABLES};

use crate::support::repo_root;

/// The word the README uses for a column type (see "Types:" above the tables).
fn readme_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Int32 => "int",
        ColumnType::Int64 => "bigint",
        ColumnType::Float64 => "double",
        ColumnType::Timestamp => "timestamp",
        ColumnType::TextMap => "map",
    }
}

#[test]
fn readme_column_tables_agree_with_the_schema() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for table in TABLES {
        let section = readme
            .split(&format!("### `{}`", table.name))
            .nth(1)
            .unwrap_or_else(|| panic!("README has no section for table {}", table.name));
        // Up to the next heading, of any level.
        let section = section.split("\n#").next().unwrap();
        // Rows of the column table: | `name` | type | required? | meaning | …
        let documented: Vec<(String, String, bool)> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                (
                    cells[0]
                        .trim_start_matches("| ")
                        .trim_matches('`')
                        .to_string(),
                    cells[1].to_string(),
                    cells[2] == "required",
                )
            })
            .collect();
        let in_code: Vec<(String, String, bool)> = table
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    readme_type(c.ty).to_string(),
                    c.required,
                )
            })
            .collect();
        assert_eq!(
            documented, in_code,
            "README's table {} (name, type, required) differs from engine/src/schema.rs",
            table.name
        );
    }
}
