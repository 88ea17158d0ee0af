//! `token_price`: the rate one kind of token of a call is billed at, for FinOps exports and
//! reports that split a call's cost by token kind.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::book::{PriceBook, SharedPrices};
use super::{PricePeriod, PricesHandle, invoke_on_rows};
use crate::TOKEN_ECONOMICS;

/// A token kind's rate in a price period.
type Rate = fn(&PricePeriod) -> f64;

/// The token kinds `token_price` knows, and each one's rate.
const KINDS: [(&str, Rate); 6] = [
    ("input", |p| p.input),
    ("cached input", |p| p.cached_input),
    ("cache write", |p| p.cache_write),
    ("cache write 1h", |p| p.cache_write_1h),
    ("output", |p| p.output),
    ("reasoning", |p| p.reasoning),
];

/// `token_price(model, token_kind, input_tokens, service_tier, at)`: USD per million tokens.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TokenPrice {
    signature: Signature,
    prices: PricesHandle,
}

impl TokenPrice {
    /// `token_price` over `prices` (the same book as `token_cost`).
    pub fn new(prices: Arc<SharedPrices>) -> Self {
        TokenPrice {
            signature: Signature::user_defined(Volatility::Stable),
            prices: PricesHandle(prices),
        }
    }
}

const SYNTAX: &str = "token_price(model, token_kind, input_tokens, service_tier, at)";

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "USD per million tokens that one kind of token of a call is billed at: the rate \
         token_cost applies to it, from the same model_prices row (the model's, at the call's \
         service tier and input size, as of `at`). Kinds: 'input' (neither read from nor \
         written to cache), 'cached input', 'cache write', 'cache write 1h', 'output' (not \
         reasoning), 'reasoning'. NULL where token_cost would have no price; an unknown kind \
         is an error.",
        SYNTAX,
    )
    .with_argument("model", "Model name as in model_prices.model.")
    .with_argument("token_kind", "One of the kinds above.")
    .with_argument(
        "input_tokens",
        "The call's input tokens, all of them (they choose long-context rates).",
    )
    .with_argument("service_tier", "standard | batch | … (NULL: standard).")
    .with_argument("at", "When the call was made (timestamp).")
    .with_sql_example(
        "```sql\n> SELECT cached_input_tokens * token_price(model, 'cached input', input_tokens, service_tier, start_time) / 1e6 FROM spans;\n```",
    )
    .build()
});

impl ScalarUDFImpl for TokenPrice {
    fn name(&self) -> &str {
        "token_price"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let text = |t: &DataType| t.is_string() || t.is_null();
        let ok = arg_types.len() == 5
            && text(&arg_types[0])
            && text(&arg_types[1])
            && (arg_types[2].is_integer() || arg_types[2].is_null())
            && text(&arg_types[3])
            && (matches!(arg_types[4], DataType::Timestamp(_, _) | DataType::Null)
                || arg_types[4].is_string());
        if !ok {
            return plan_err!(
                "{SYNTAX} takes text, text, an integer, text and a timestamp, got {arg_types:?}"
            );
        }
        Ok(vec![
            DataType::Utf8,
            DataType::Utf8,
            DataType::Int64,
            DataType::Utf8,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let prices = self.prices.0.current();
        if let Some(reason) = prices.unavailable_reason() {
            return exec_err!("token_price: model prices are unavailable: {reason}");
        }
        invoke_on_rows(args, |arrays, rows| rates(&prices, arrays, rows))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The rate of each row's token kind.
fn rates(prices: &PriceBook, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (model, kind, input) = (
        arrays[0].as_string::<i32>(),
        arrays[1].as_string::<i32>(),
        arrays[2].as_primitive::<Int64Type>(),
    );
    let (tier, at) = (
        arrays[3].as_string::<i32>(),
        arrays[4].as_primitive::<TimestampMicrosecondType>(),
    );
    let mut out = Float64Builder::with_capacity(rows);
    for row in 0..rows {
        if model.is_null(row) || kind.is_null(row) || at.is_null(row) {
            out.append_null();
            continue;
        }
        let Some((_, rate)) = KINDS.iter().find(|(name, _)| *name == kind.value(row)) else {
            let known: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
            return exec_err!(
                "token_price: unknown token kind {:?}; the kinds are {}",
                kind.value(row),
                known.join(", ")
            );
        };
        let tokens = if input.is_null(row) {
            0
        } else {
            input.value(row)
        };
        let tier = (tier.is_valid(row) && !tier.value(row).is_empty()).then(|| tier.value(row));
        let period = prices.price_at(model.value(row), tier, tokens, at.value(row));
        out.append_option(period.map(rate));
    }
    Ok(Arc::new(out.finish()))
}
