//! Reading OTLP attributes: one span's attributes over its resource's, as the typed values our
//! columns want, whatever type the instrumentation sent them as.

use std::collections::{BTreeMap, HashSet};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// The attributes of one span, with its resource's beneath: a key on the span wins.
pub struct Attributes<'a> {
    span: &'a [KeyValue],
    resource: &'a [KeyValue],
    /// Span attribute keys a column took, left out of the `attributes` column.
    used: HashSet<&'a str>,
}

impl<'a> Attributes<'a> {
    /// `span`'s attributes over `resource`'s.
    pub fn new(span: &'a [KeyValue], resource: &'a [KeyValue]) -> Self {
        Attributes {
            span,
            resource,
            used: HashSet::new(),
        }
    }

    /// The value of the first of `keys` present (span first, then resource), marking it used.
    pub fn value(&mut self, keys: &[&str]) -> Option<&'a Value> {
        for key in keys {
            if let Some(kv) = self.span.iter().find(|kv| kv.key == *key)
                && let Some(value) = present(kv.value.as_ref())
            {
                self.used.insert(kv.key.as_str());
                return Some(value);
            }
            if let Some(value) = self
                .resource
                .iter()
                .find(|kv| kv.key == *key)
                .and_then(|kv| present(kv.value.as_ref()))
            {
                return Some(value);
            }
        }
        None
    }

    /// The first of `keys` as text, leaving it in the `attributes` column (for attributes that
    /// classify a span without being a column of their own, like `gen_ai.operation.name`).
    pub fn peek_text(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|key| {
            self.span
                .iter()
                .chain(self.resource)
                .find(|kv| kv.key == *key)
                .and_then(|kv| present(kv.value.as_ref()))
                .and_then(as_text)
        })
    }

    /// The first of `keys` as text (numbers and booleans as written; JSON-encoded strings, as
    /// Langfuse sends metadata, unwrapped).
    pub fn text(&mut self, keys: &[&str]) -> Option<String> {
        self.value(keys).and_then(as_text)
    }

    /// The first of `keys` as an integer (an integer, a whole double, or text holding one).
    pub fn int(&mut self, keys: &[&str]) -> Option<i64> {
        self.value(keys).and_then(as_int)
    }

    /// The first of `keys` as a number.
    pub fn float(&mut self, keys: &[&str]) -> Option<f64> {
        self.value(keys).and_then(as_float)
    }

    /// Every span attribute no column took, as text: the `attributes` column.
    pub fn unused(&self) -> BTreeMap<String, String> {
        self.span
            .iter()
            .filter(|kv| !self.used.contains(kv.key.as_str()))
            .filter_map(|kv| Some((kv.key.clone(), display(present(kv.value.as_ref())?))))
            .collect()
    }
}

fn present(value: Option<&AnyValue>) -> Option<&Value> {
    value.and_then(|v| v.value.as_ref())
}

/// Text of a scalar value; a string holding a JSON string (`"\"TICKET-42\""`) is unwrapped.
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(unquote(s)),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unquote(s: &str) -> String {
    if s.len() >= 2
        && s.starts_with('"')
        && s.ends_with('"')
        && let Ok(serde_json::Value::String(inner)) = serde_json::from_str(s)
    {
        return inner;
    }
    s.to_string()
}

/// An integer from an integer, a whole double, or text holding either.
pub fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.is_finite() => Some(*d as i64),
        Value::StringValue(s) => {
            let s = unquote(s);
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|d| d.fract() == 0.0 && d.is_finite())
                    .map(|d| d as i64)
            })
        }
        _ => None,
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
pub fn display(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::ArrayValue(_) | Value::KvlistValue(_) | Value::BytesValue(_) => {
            to_json(value).to_string()
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
