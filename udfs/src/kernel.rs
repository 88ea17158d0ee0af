//! Shared machinery for the scalar functions: arguments as Float64 columns or literals, and a
//! vectorised element-wise loop that SQL NULLs pass through.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};

use crate::error::FunctionError;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// One Float64 argument: a column or a literal.
pub(crate) enum F64Arg<'a> {
    Column(&'a Float64Array),
    Literal(Option<f64>),
}

impl<'a> F64Arg<'a> {
    pub(crate) fn from(value: &'a ColumnarValue, function: &str) -> Result<Self> {
        match value {
            ColumnarValue::Array(array) if array.data_type() == &DataType::Float64 => {
                Ok(F64Arg::Column(array.as_primitive::<Float64Type>()))
            }
            ColumnarValue::Scalar(ScalarValue::Float64(v)) => Ok(F64Arg::Literal(*v)),
            ColumnarValue::Scalar(s) if s.is_null() => Ok(F64Arg::Literal(None)),
            other => exec_err!(
                "{function}: expected a DOUBLE argument, got {}",
                other.data_type()
            ),
        }
    }
}

/// A two-argument function on doubles: what it computes, which inputs give NULL, and which
/// are errors. Only rows where both inputs are non-null count.
pub trait PairFunction: Debug + Default + PartialEq + Eq + Hash + Send + Sync + 'static {
    /// The SQL name.
    const NAME: &'static str;
    /// Its documentation.
    fn documentation() -> &'static Documentation;
    /// The result for two non-null inputs (ignored where `null_if` holds).
    fn apply(a: f64, b: f64) -> f64;
    /// Inputs whose result is NULL rather than a number.
    fn null_if(a: f64, b: f64) -> bool;
    /// Inputs that are errors (a plain test, so scans over it vectorise).
    fn invalid(_a: f64, _b: f64) -> bool {
        false
    }
    /// What is wrong with inputs for which [`PairFunction::invalid`] holds.
    fn invalid_message(_a: f64, _b: f64) -> String {
        String::new()
    }
}

/// The SQL function of a [`PairFunction`]: both arguments coerced to DOUBLE, result DOUBLE.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PairUdf<F: PairFunction> {
    signature: Signature,
    function: F,
}

impl<F: PairFunction> Default for PairUdf<F> {
    fn default() -> Self {
        PairUdf {
            signature: Signature::uniform(2, vec![DataType::Float64], Volatility::Immutable),
            function: F::default(),
        }
    }
}

impl<F: PairFunction> ScalarUDFImpl for PairUdf<F> {
    fn name(&self) -> &str {
        F::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval_pair::<F>(&args.args, args.number_rows)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(F::documentation())
    }
}

/// Evaluates `F` over two arguments, each a column or a literal.
fn eval_pair<F: PairFunction>(args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
    let [a, b] = args else {
        return exec_err!("{} takes two arguments, got {}", F::NAME, args.len());
    };
    let (a, b) = (F64Arg::from(a, F::NAME)?, F64Arg::from(b, F::NAME)?);
    let (a, b) = match (a, b) {
        (F64Arg::Literal(a), F64Arg::Literal(b)) => {
            return Ok(ColumnarValue::Scalar(ScalarValue::Float64(
                scalar_pair::<F>(a, b)?,
            )));
        }
        (_, F64Arg::Literal(None)) | (F64Arg::Literal(None), _) => {
            return Ok(ColumnarValue::Scalar(ScalarValue::Float64(None)));
        }
        (a, b) => (materialize(a, rows), materialize(b, rows)),
    };
    Ok(ColumnarValue::Array(array_pair::<F>(&a, &b)?))
}

fn scalar_pair<F: PairFunction>(a: Option<f64>, b: Option<f64>) -> Result<Option<f64>> {
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(None);
    };
    if F::invalid(a, b) {
        return Err(FunctionError::invalid_argument(format!(
            "{}: {}",
            F::NAME,
            F::invalid_message(a, b)
        )));
    }
    Ok((!F::null_if(a, b)).then(|| F::apply(a, b)))
}

fn materialize(arg: F64Arg<'_>, rows: usize) -> Float64Array {
    match arg {
        F64Arg::Column(c) => c.clone(),
        F64Arg::Literal(Some(v)) => Float64Array::from_value(v, rows),
        F64Arg::Literal(None) => Float64Array::new_null(rows),
    }
}

/// The vectorised path: one branch-free scan finds whether any slot might be an error or a NULL
/// (null slots too: their values are discarded), one tight pass computes every slot, and the
/// per-row work runs only when the scan found something.
fn array_pair<F: PairFunction>(a: &Float64Array, b: &Float64Array) -> Result<ArrayRef> {
    let (av, bv) = (a.values(), b.values());
    let nulls = NullBuffer::union(a.nulls(), b.nulls());
    let (any_invalid, any_null) = av
        .iter()
        .zip(bv.iter())
        .fold((false, false), |(bad, null), (&x, &y)| {
            (bad | F::invalid(x, y), null | F::null_if(x, y))
        });
    if any_invalid {
        let is_valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        if let Some(i) = (0..av.len()).find(|&i| is_valid(i) && F::invalid(av[i], bv[i])) {
            return Err(FunctionError::invalid_argument(format!(
                "{}: {}",
                F::NAME,
                F::invalid_message(av[i], bv[i])
            )));
        }
    }
    let values: ScalarBuffer<f64> = av
        .iter()
        .zip(bv.iter())
        .map(|(&x, &y)| F::apply(x, y))
        .collect();
    let nulls = if any_null {
        let keep = NullBuffer::new(BooleanBuffer::collect_bool(av.len(), |i| {
            !F::null_if(av[i], bv[i])
        }));
        NullBuffer::union(nulls.as_ref(), Some(&keep))
    } else {
        nulls
    };
    Ok(Arc::new(Float64Array::new(values, nulls)))
}

/// Formats a value for an error message the way SQL users write it.
pub(crate) fn show(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else {
        v.to_string()
    }
}
