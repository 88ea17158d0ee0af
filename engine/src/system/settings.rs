//! `report_settings`: the thresholds the reports decide with, each with a documented default that
//! a `report_settings.csv` at the root of the data location overrides, so a team tunes its
//! reports without a rebuild. Read afresh by each query, as `tokenledger_files` is: an edited file
//! counts from the next query on, in a running server too.

use std::sync::{Arc, LazyLock};

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::FreshRows;
use crate::error::{EngineError, Result};

/// The table's name.
pub const SETTINGS_TABLE: &str = "report_settings";

/// The file, at the root of the data location, whose rows override the defaults.
pub const SETTINGS_FILE: &str = "report_settings.csv";

/// One threshold a report decides with.
#[derive(Debug, Clone, Copy)]
pub struct ReportSetting {
    /// Its name (a row of `report_settings`).
    pub name: &'static str,
    /// The value used when the file does not set it.
    pub default: f64,
    /// Which report reads it, and what it decides.
    pub description: &'static str,
}

/// Every setting, with its default.
pub static REPORT_SETTINGS: [ReportSetting; 4] = [
    ReportSetting {
        name: "route_min_saving_share",
        default: 0.10,
        description: "allocation: route to a cheaper model when that would save at least this share of AI spend",
    },
    ReportSetting {
        name: "invest_min_value_per_dollar",
        default: 1.0,
        description: "allocation: invest more compute when an extra dollar has gone with at least this much extra value",
    },
    ReportSetting {
        name: "success_tolerance",
        default: 0.05,
        description: "routing_candidates: how much lower a cheaper model's success rate may be for it to do the job as well",
    },
    ReportSetting {
        name: "reference_context_tokens",
        default: 8000.0,
        description: "context_growth: the prompt size above which an LLM call counts as long",
    },
];

static SETTINGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("default_value", DataType::Float64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
    ]))
});

/// The `report_settings` table of one data location.
#[derive(Debug)]
pub struct SettingsTable {
    store: Arc<dyn ObjectStore>,
    file: Path,
    /// The file as users name it (`/data/report_settings.csv`, `s3://bucket/…`).
    shown: String,
}

impl SettingsTable {
    /// Settings read from `file` in `store`, shown to users as `shown`.
    pub fn new(store: Arc<dyn ObjectStore>, file: Path, shown: String) -> Self {
        SettingsTable { store, file, shown }
    }

    /// The values in [`REPORT_SETTINGS`] order, and where each came from.
    pub async fn load(&self) -> Result<Vec<(f64, String)>> {
        let text = match self.store.get(&self.file).await {
            Ok(found) => Some(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut values: Vec<(f64, String)> = REPORT_SETTINGS
            .iter()
            .map(|s| (s.default, "default".to_string()))
            .collect();
        let Some(text) = text else {
            return Ok(values);
        };
        let text = std::str::from_utf8(&text).map_err(|_| self.bad(0, "is not UTF-8 text"))?;
        for (name, value, line) in parse(text).map_err(|(line, reason)| self.bad(line, &reason))? {
            let index = REPORT_SETTINGS
                .iter()
                .position(|s| s.name == name)
                .expect("parse only returns known names");
            values[index] = (value, format!("{}:{line}", self.shown));
        }
        Ok(values)
    }

    fn bad(&self, line: usize, reason: &str) -> EngineError {
        EngineError::Settings {
            file: if line == 0 {
                self.shown.clone()
            } else {
                format!("{}:{line}", self.shown)
            },
            reason: reason.to_string(),
        }
    }
}

/// A setting's name, value and line in the file.
type SettingRow<'a> = (&'a str, f64, usize);

/// The `name,value` rows of a settings file, with their line numbers. A first line `name,value`
/// is a header; text after a `#` is a comment, and empty lines are skipped. An unknown name, a value that
/// is not a finite number, or a name set twice is an error naming its line.
fn parse(text: &str) -> std::result::Result<Vec<SettingRow<'_>>, (usize, String)> {
    let mut rows: Vec<SettingRow> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        // Everything after a `#` is a comment.
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() || (line == 1 && content == "name,value") {
            continue;
        }
        let Some((name, value)) = content.split_once(',') else {
            return Err((line, format!("expected name,value, got {content:?}")));
        };
        let (name, value) = (name.trim(), value.trim());
        if !REPORT_SETTINGS.iter().any(|s| s.name == name) {
            let known: Vec<&str> = REPORT_SETTINGS.iter().map(|s| s.name).collect();
            return Err((
                line,
                format!("unknown setting {name:?} (known: {})", known.join(", ")),
            ));
        }
        let number = value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| (line, format!("{name}: {value:?} is not a number")))?;
        if let Some(first) = rows.iter().find(|r| r.0 == name) {
            return Err((line, format!("{name} is already set on line {}", first.2)));
        }
        rows.push((name, number, line));
    }
    Ok(rows)
}

#[async_trait]
impl FreshRows for SettingsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&SETTINGS_SCHEMA)
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let values = self.load().await?;
        let column = |f: fn(&ReportSetting) -> &'static str| {
            Arc::new(StringArray::from_iter_values(REPORT_SETTINGS.iter().map(f)))
        };
        Ok(RecordBatch::try_new(
            self.schema(),
            vec![
                column(|s| s.name),
                Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.0))),
                Arc::new(Float64Array::from_iter_values(
                    REPORT_SETTINGS.iter().map(|s| s.default),
                )),
                Arc::new(StringArray::from_iter_values(values.iter().map(|v| &v.1))),
                column(|s| s.description),
            ],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_known_names_and_names_the_line_of_a_mistake() {
        let rows =
            parse("name,value\n# tuned for us\n\nsuccess_tolerance, 0.1  # wider\n").unwrap();
        assert_eq!(rows, vec![("success_tolerance", 0.1, 4)]);
        let unknown = parse("success_tolerence,0.1").unwrap_err();
        assert_eq!(unknown.0, 1);
        assert!(unknown.1.contains("unknown setting \"success_tolerence\""));
        assert_eq!(parse("name,value\nsuccess_tolerance,NaN").unwrap_err().0, 2);
        assert_eq!(parse("success_tolerance;0.1").unwrap_err().0, 1);
        let twice = parse("success_tolerance,0.1\nsuccess_tolerance,0.2").unwrap_err();
        assert_eq!(
            twice,
            (2, "success_tolerance is already set on line 1".into())
        );
    }

    #[test]
    fn the_readme_example_names_every_setting_with_its_default() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```\nname,value\n")
            .expect("README has the example")
            + 4;
        let example = &readme[start..start + readme[start..].find("```").unwrap()];
        let rows = parse(example).expect("the README example parses");
        let set: Vec<(&str, f64)> = rows.iter().map(|r| (r.0, r.1)).collect();
        let defaults: Vec<(&str, f64)> = REPORT_SETTINGS
            .iter()
            .map(|s| (s.name, s.default))
            .collect();
        assert_eq!(set, defaults);
    }
}
