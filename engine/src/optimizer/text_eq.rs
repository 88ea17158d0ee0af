//! `text_column = 'literal'` (and `<>`) in filters, compared by string view.
//!
//! Text is read as `Utf8View` (see [`crate::schema::ColumnType::query_type`]). Arrow's
//! comparison takes each row's view apart (length, prefix, buffer, offset) and, for a name
//! longer than 12 bytes that shares its length and first four bytes with the literal (every
//! `claude-…` model of one length), compares the bytes. Yet the columns people filter on —
//! model, workflow, kind, status — are dictionary-encoded in Parquet, and the decoder gives
//! every row of one name the same 16-byte view. So [`eq_literal`] decides rows on whole views:
//! a branch-free pass compares each view with the literal's (its length and first four bytes
//! when it is longer than 12), and the few rows left are checked against the last view found
//! equal or unequal; bytes are compared once per distinct view in a run.
//!
//! [`TextEqualityRule`] puts it in place of DataFusion's comparison in `FilterExec` predicates.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::builder::make_view;
use arrow::array::{Array, AsArray, BooleanArray, StringViewArray};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use super::OptimizerOptions;

/// `array[i] = literal` for every row, null where `array` is null.
pub fn eq_literal(array: &StringViewArray, literal: &str) -> BooleanArray {
    let wanted = literal.as_bytes();
    // A view starts with the length (u32) and the first four bytes; a string of up to 12 bytes
    // is held in the view itself, zero-padded, so the whole view is the string.
    let wanted_view = make_view(wanted, 0, 0);
    let views = array.views();
    let words = if wanted.len() <= 12 {
        pack(views, |view| view == wanted_view)
    } else {
        let wanted_head = wanted_view as u64;
        let mut words = pack(views, |view| view as u64 == wanted_head);
        keep_equal_bytes(array, wanted, &mut words);
        words
    };
    let values = BooleanBuffer::new(Buffer::from_vec(words), 0, views.len());
    BooleanArray::new(values, array.nulls().cloned())
}

/// One bit per view, set where `test` holds. Without branches, so the compiler vectorizes it:
/// rows of different names interleave, and a branch per row would be mispredicted.
fn pack(views: &[u128], test: impl Fn(u128) -> bool) -> Vec<u64> {
    views
        .chunks(64)
        .map(|chunk| {
            chunk.iter().enumerate().fold(0, |word, (bit, &view)| {
                word | (u64::from(test(view)) << bit)
            })
        })
        .collect()
}

/// Clears the set bits of `words` (rows whose length and first four bytes are `wanted`'s) where
/// the bytes differ. Equal names decoded from one dictionary share a view, so bytes are compared
/// once per distinct view in a run, not once per row.
fn keep_equal_bytes(array: &StringViewArray, wanted: &[u8], words: &mut [u64]) {
    let views = array.views();
    let (mut last_equal, mut last_unequal) = (None, None);
    for (index, word) in words.iter_mut().enumerate() {
        let mut candidates = *word;
        while candidates != 0 {
            let bit = candidates.trailing_zeros();
            candidates &= candidates - 1;
            let row = index * 64 + bit as usize;
            let view = Some(views[row]);
            let equal = if view == last_equal {
                true
            } else if view == last_unequal || array.is_null(row) {
                false
            } else {
                let equal = array.value(row).as_bytes() == wanted;
                if equal {
                    last_equal = view;
                } else {
                    last_unequal = view;
                }
                equal
            };
            if !equal {
                *word &= !(1 << bit);
            }
        }
    }
}

/// `expr = literal` or `expr <> literal` over a `Utf8View` expression, by [`eq_literal`].
/// Shown as the comparison it replaces, so plans read the same.
#[derive(Debug, Eq)]
pub struct TextEqualsLiteral {
    /// The text being compared.
    expr: Arc<dyn PhysicalExpr>,
    /// The literal's value.
    literal: String,
    /// `<>` instead of `=`.
    negated: bool,
}

impl PartialEq for TextEqualsLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.expr.eq(&other.expr) && self.literal == other.literal && self.negated == other.negated
    }
}

impl Hash for TextEqualsLiteral {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
        self.literal.hash(state);
        self.negated.hash(state);
    }
}

impl TextEqualsLiteral {
    /// `binary` as a [`TextEqualsLiteral`] if it is `=` or `<>` between a `Utf8View` expression
    /// and a non-null text literal (either way round) over `schema`.
    pub fn try_from_binary(binary: &BinaryExpr, schema: &Schema) -> Option<Self> {
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return None,
        };
        let (expr, literal) = [
            (binary.left(), binary.right()),
            (binary.right(), binary.left()),
        ]
        .into_iter()
        .find_map(|(expr, other)| Some((expr, text_literal(other.as_ref())?)))?;
        if expr.data_type(schema).ok()? != DataType::Utf8View {
            return None;
        }
        Some(TextEqualsLiteral {
            expr: Arc::clone(expr),
            literal,
            negated,
        })
    }

    fn operator(&self) -> &'static str {
        if self.negated { "!=" } else { "=" }
    }
}

/// The value of a non-null text literal.
fn text_literal(expr: &dyn PhysicalExpr) -> Option<String> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8View(Some(s))
        | ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

impl fmt::Display for TextEqualsLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As DataFusion shows a text literal: its value, unquoted.
        write!(f, "{} {} {}", self.expr, self.operator(), self.literal)
    }
}

impl PhysicalExpr for TextEqualsLiteral {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.expr.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.expr.evaluate(batch)? {
            ColumnarValue::Array(array) => {
                let equal = eq_literal(array.as_string_view(), &self.literal);
                let result = if self.negated {
                    BooleanArray::new(!equal.values(), equal.nulls().cloned())
                } else {
                    equal
                };
                Ok(ColumnarValue::Array(Arc::new(result)))
            }
            ColumnarValue::Scalar(scalar) => {
                let value = match scalar {
                    ScalarValue::Utf8View(v) | ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) => {
                        v
                    }
                    other => {
                        return datafusion::common::internal_err!(
                            "text comparison given a {} value",
                            other.data_type()
                        );
                    }
                };
                let result = value.map(|v| (v == self.literal) != self.negated);
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(result)))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.expr]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(TextEqualsLiteral {
            expr: Arc::clone(&children[0]),
            literal: self.literal.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt_sql(f)?;
        write!(f, " {} ", self.operator())?;
        Literal::new(ScalarValue::Utf8View(Some(self.literal.clone()))).fmt_sql(f)
    }
}

/// Puts [`TextEqualsLiteral`] in place of `text = 'literal'` and `text <> 'literal'` in every
/// `FilterExec` predicate. Not for distributed plans: workers could not decode the expression.
#[derive(Debug, Default)]
pub struct TextEqualityRule;

impl PhysicalOptimizerRule for TextEqualityRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !OptimizerOptions::of(config).text_equality {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            let predicate = Arc::clone(filter.predicate()).transform_up(|expr| {
                let replaced = expr
                    .downcast_ref::<BinaryExpr>()
                    .and_then(|binary| TextEqualsLiteral::try_from_binary(binary, &schema));
                Ok(match replaced {
                    Some(text) => Transformed::yes(Arc::new(text) as Arc<dyn PhysicalExpr>),
                    None => Transformed::no(expr),
                })
            })?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(predicate.data)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "text_equality"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringViewBuilder;
    use arrow::compute::kernels::cmp;

    /// Names of every length class: inline (≤ 12 bytes), long, sharing length and prefix.
    const NAMES: [&str; 7] = [
        "claude-opus-4-1",
        "claude-opus-4-0",
        "claude-haiku-4-5",
        "gpt-4.1-mini",
        "gpt-4.1",
        "",
        "claude-opus-4-1 ",
    ];

    /// Rows as Parquet's dictionary decoding gives them (one view per name, repeated) and as a
    /// builder gives them (a view per row), with nulls.
    fn columns(rows: usize) -> Vec<StringViewArray> {
        let pick = |i: usize| (i * 7 + i / 3) % (NAMES.len() + 1);
        let mut distinct = StringViewBuilder::new();
        let dictionary: StringViewArray = NAMES.iter().map(Some).collect();
        let dictionary_views = dictionary.views().clone();
        let mut views = Vec::new();
        for i in 0..rows {
            match NAMES.get(pick(i)) {
                Some(name) => {
                    distinct.append_value(name);
                    views.push(dictionary_views[pick(i)]);
                }
                None => {
                    distinct.append_null();
                    views.push(0);
                }
            }
        }
        let nulls = distinct.finish_cloned().nulls().cloned();
        let shared =
            StringViewArray::try_new(views.into(), dictionary.data_buffers().to_vec(), nulls)
                .unwrap();
        vec![distinct.finish(), shared]
    }

    #[test]
    fn agrees_with_arrows_comparison_on_every_row() {
        let sliced = columns(1000).into_iter().map(|array| array.slice(3, 900));
        for array in columns(1000).into_iter().chain(sliced) {
            for literal in NAMES
                .iter()
                .chain(&["claude-opus-4-2", "gpt-4.1-nano", "x"])
            {
                let scalar = StringViewArray::new_scalar(literal);
                let expected = cmp::eq(&array, &scalar).unwrap();
                assert_eq!(eq_literal(&array, literal), expected, "{literal:?}");
            }
        }
    }

    #[test]
    fn replaces_text_comparisons_in_filters_and_leaves_the_rest() {
        use datafusion::physical_expr::expressions::{col, lit};
        use datafusion::physical_plan::empty::EmptyExec;

        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("model", DataType::Utf8View, true),
            arrow::datatypes::Field::new("name", DataType::Utf8, true),
        ]));
        let model = col("model", &schema).unwrap();
        let name = col("name", &schema).unwrap();
        let text = |s: &str| lit(ScalarValue::Utf8View(Some(s.into())));
        let predicate = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(
                text("gpt-4.1"),
                Operator::NotEq,
                Arc::clone(&model),
            )),
            Operator::And,
            Arc::new(BinaryExpr::new(
                name,
                Operator::Eq,
                lit(ScalarValue::Utf8(Some("x".into()))),
            )),
        ));
        let filter = Arc::new(
            FilterExec::try_new(predicate, Arc::new(EmptyExec::new(Arc::clone(&schema)))).unwrap(),
        );
        let plan = TextEqualityRule
            .optimize(filter, &ConfigOptions::default())
            .unwrap();
        let predicate = plan.downcast_ref::<FilterExec>().unwrap().predicate();
        let and = predicate.downcast_ref::<BinaryExpr>().unwrap();
        let replaced = and.left().downcast_ref::<TextEqualsLiteral>().unwrap();
        assert!(replaced.negated);
        assert_eq!(replaced.literal, "gpt-4.1");
        // Utf8 is not a view: left to DataFusion.
        assert!(and.right().downcast_ref::<BinaryExpr>().is_some());
        assert_eq!(predicate.to_string(), "model@0 != gpt-4.1 AND name@1 = x");
    }
}
