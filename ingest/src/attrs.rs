//! Reading OTLP attributes: one span's attributes over its resource's, as the typed values our
//! columns want, whatever type the instrumentation sent them as.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// Attributes sorted by key for binary search: a span is asked for some sixty keys across the
/// conventions, which a scan of its attributes made the receiver's largest cost.
pub struct Index<'a> {
    /// (key, position in the attribute list), sorted by key; equal keys keep their order.
    entries: Vec<(&'a str, usize)>,
    attributes: &'a [KeyValue],
}

impl<'a> Index<'a> {
    /// Indexes `attributes`.
    pub fn new(attributes: &'a [KeyValue]) -> Self {
        let mut entries: Vec<(&str, usize)> = attributes
            .iter()
            .enumerate()
            .map(|(i, kv)| (kv.key.as_str(), i))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        Index {
            entries,
            attributes,
        }
    }

    /// The first attribute named `key` that has a value, with its position.
    fn get(&self, key: &str) -> Option<(usize, &'a Value)> {
        let first = self.entries.partition_point(|e| e.0 < key);
        self.entries[first..]
            .iter()
            .take_while(|e| e.0 == key)
            .find_map(|&(_, i)| Some((i, present(self.attributes[i].value.as_ref())?)))
    }
}

/// The attributes of one span, with its resource's beneath: a key on the span wins.
pub struct Attributes<'a, 'r> {
    span: Index<'a>,
    resource: &'r Index<'a>,
    /// Span attributes a column took (by position), left out of the `attributes` column.
    used: Vec<bool>,
}

impl<'a, 'r> Attributes<'a, 'r> {
    /// `span`'s attributes over `resource`'s (indexed once for all of its spans).
    pub fn new(span: &'a [KeyValue], resource: &'r Index<'a>) -> Self {
        Attributes {
            span: Index::new(span),
            resource,
            used: vec![false; span.len()],
        }
    }

    /// The value of the first of `keys` present (span first, then resource), marking it used.
    pub fn value(&mut self, keys: &[&str]) -> Option<&'a Value> {
        for key in keys {
            if let Some((i, value)) = self.span.get(key) {
                self.used[i] = true;
                return Some(value);
            }
            if let Some((_, value)) = self.resource.get(key) {
                return Some(value);
            }
        }
        None
    }

    /// The first of `keys` as text, leaving it in the `attributes` column (for attributes that
    /// classify a span without being a column of their own, like `gen_ai.operation.name`).
    pub fn peek_text(&self, keys: &[&str]) -> Option<Cow<'a, str>> {
        keys.iter().find_map(|key| {
            self.span
                .get(key)
                .or_else(|| self.resource.get(key))
                .and_then(|(_, value)| as_text(value))
        })
    }

    /// The first of `keys` as text (numbers and booleans as written; JSON-encoded strings, as
    /// Langfuse sends metadata, unwrapped).
    pub fn text(&mut self, keys: &[&str]) -> Option<Cow<'a, str>> {
        self.value(keys).and_then(as_text)
    }

    /// The first of `keys` as a number.
    pub fn float(&mut self, keys: &[&str]) -> Option<f64> {
        self.value(keys).and_then(as_float)
    }

    /// The first of `keys` present, with the key it was found under.
    fn keyed_value(&mut self, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        keys.iter()
            .find_map(|key| Some((*key, self.value(&[*key])?)))
    }

    /// The first of `keys` as a whole number (see [`as_whole`]); an error naming the key and
    /// the value when it is present but not one. Nothing is rounded or clamped.
    pub fn whole(&mut self, keys: &[&'static str]) -> Result<Option<i64>, String> {
        let Some((key, value)) = self.keyed_value(keys) else {
            return Ok(None);
        };
        as_whole(value)
            .map(Some)
            .ok_or_else(|| format!("{key} {} is not a whole number", shown(value)))
    }

    /// The first of `keys` as a finite number; an error naming the key and the value when it
    /// is present but not one.
    pub fn finite(&mut self, keys: &[&'static str]) -> Result<Option<f64>, String> {
        let Some((key, value)) = self.keyed_value(keys) else {
            return Ok(None);
        };
        as_float(value)
            .map(Some)
            .ok_or_else(|| format!("{key} {} is not a finite number", shown(value)))
    }

    /// Every span attribute no column took, as text: the `attributes` column.
    pub fn unused(&self) -> Vec<(&'a str, Cow<'a, str>)> {
        self.span
            .attributes
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .filter_map(|(kv, _)| Some((kv.key.as_str(), display(present(kv.value.as_ref())?))))
            .collect()
    }
}

fn present(value: Option<&AnyValue>) -> Option<&Value> {
    value.and_then(|v| v.value.as_ref())
}

/// Text of a scalar value; a string holding a JSON string (`"\"TICKET-42\""`) is unwrapped.
pub fn as_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::StringValue(s) => Some(unquote(s)),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        Value::BoolValue(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

fn unquote(s: &str) -> Cow<'_, str> {
    if s.len() >= 2
        && s.starts_with('"')
        && s.ends_with('"')
        && let Ok(serde_json::Value::String(inner)) = serde_json::from_str(s)
    {
        return Cow::Owned(inner);
    }
    Cow::Borrowed(s)
}

/// An integer exactly: an integer, a double with no fraction inside the 64-bit range, or text
/// holding either. `None` for anything else (`1e19`, `\"99999999999999999999\"`, `2.5`, `abc`):
/// a value that would have to be rounded or clamped is not a count.
pub fn as_whole(value: &Value) -> Option<i64> {
    // 2^63 as a double: every whole double below it in magnitude converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let from_double = |d: f64| (d.fract() == 0.0 && d > -LIMIT && d < LIMIT).then_some(d as i64);
    match value {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) => from_double(*d),
        Value::StringValue(s) => {
            let s = unquote(s);
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_double))
        }
        _ => None,
    }
}

/// A value as the error messages show it: text quoted, numbers as sent.
fn shown(value: &Value) -> String {
    match value {
        Value::StringValue(s) => format!("{s:?}"),
        other => display(other).into_owned(),
    }
}

/// A number from an integer, a double, or text holding one.
pub fn as_float(value: &Value) -> Option<f64> {
    match value {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => unquote(s).trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|d| d.is_finite())
}

/// Any value as text for the `attributes` column: scalars as written, arrays and maps as JSON.
pub fn display(value: &Value) -> Cow<'_, str> {
    match value {
        Value::StringValue(s) => Cow::Borrowed(s),
        Value::ArrayValue(_) | Value::KvlistValue(_) | Value::BytesValue(_) => {
            Cow::Owned(to_json(value).to_string())
        }
        other => as_text(other).unwrap_or_default(),
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::StringValue(s) => J::String(s.clone()),
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(d) => J::from(*d),
        Value::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .filter_map(|v| v.value.as_ref().map(to_json))
                .collect(),
        ),
        Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .filter_map(|kv| {
                    Some((kv.key.clone(), to_json(kv.value.as_ref()?.value.as_ref()?)))
                })
                .collect(),
        ),
        Value::BytesValue(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        // An index into a profile's string table: meaningless on a span.
        Value::StringValueStrindex(_) => J::Null,
    }
}

/// A key inside a JSON object held in a string attribute (OpenInference `metadata`, Langfuse
/// usage and cost details), found at the top level or, for `a.b`, nested.
pub fn json_field(json: &serde_json::Value, path: &str) -> Option<serde_json::Value> {
    if let Some(v) = json.get(path) {
        return Some(v.clone());
    }
    let mut current = json;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    Some(current.clone())
}

/// A JSON value as text (strings unwrapped, numbers as written).
pub fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON value as a number (numbers, or strings holding one).
pub fn json_float(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|d: &f64| d.is_finite())
}
