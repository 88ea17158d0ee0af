//! The README documents every table column (the schema in code is the source of truth).

use tokenledger_engine::schema::TABLES;

use crate::support::repo_root;

#[test]
fn readme_documents_every_column() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for table in TABLES {
        let section = readme
            .split(&format!("### `{}`", table.name))
            .nth(1)
            .unwrap_or_else(|| panic!("README has no section for table {}", table.name));
        let section = section.split("\n### ").next().unwrap();
        for column in table.columns {
            assert!(
                section.contains(&format!("| `{}` |", column.name)),
                "README section of {} does not document column {}",
                table.name,
                column.name
            );
        }
    }
}
