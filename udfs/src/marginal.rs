//! Marginal token utility: business value gained per extra dollar of inference.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::function::StateFieldsArgs;
use datafusion::logical_expr::{AggregateUDFImpl, Documentation, Signature, Volatility};

use crate::TOKEN_ECONOMICS;
use crate::state::{AggState, passes, state_accumulators};

/// `marginal_token_utility(value, cost)`: least-squares slope of value on cost.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MarginalTokenUtility {
    signature: Signature,
}

impl Default for MarginalTokenUtility {
    fn default() -> Self {
        MarginalTokenUtility {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Running co-moments of (cost = x, value = y), updated one point at a time (Welford) so that
/// large, close values do not cancel as they would in sums of squares.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Comoments {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    /// Σ (x − mean_x)²
    m2_x: f64,
    /// Σ (x − mean_x)(y − mean_y)
    c_xy: f64,
    /// Whether points were removed: removal leaves rounding residue where the spread should be 0.
    retracted: bool,
}

impl AggState for Comoments {
    /// (cost, value)
    type Row = (f64, f64);

    /// Rows with a NULL cost or value are skipped.
    fn rows(
        values: &[ArrayRef],
        filter: Option<&BooleanArray>,
        mut f: impl FnMut(usize, (f64, f64)),
    ) {
        let value = values[0].as_primitive::<Float64Type>();
        let cost = values[1].as_primitive::<Float64Type>();
        for row in 0..value.len() {
            if value.is_valid(row) && cost.is_valid(row) && passes(filter, row) {
                f(row, (cost.value(row), value.value(row)));
            }
        }
    }

    fn add(&mut self, (x, y): (f64, f64)) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        self.mean_x += dx / n;
        self.mean_y += (y - self.mean_y) / n;
        self.m2_x += dx * (x - self.mean_x);
        self.c_xy += dx * (y - self.mean_y);
    }

    /// Undoes the `add` of the same point (for sliding window frames).
    fn remove(&mut self, (x, y): (f64, f64)) {
        if self.n <= 1 {
            *self = Comoments::default();
            return;
        }
        let n = self.n as f64;
        let mean_x_before = (n * self.mean_x - x) / (n - 1.0);
        let mean_y_before = (n * self.mean_y - y) / (n - 1.0);
        self.m2_x -= (x - mean_x_before) * (x - self.mean_x);
        self.c_xy -= (x - mean_x_before) * (y - self.mean_y);
        self.mean_x = mean_x_before;
        self.mean_y = mean_y_before;
        self.n -= 1;
        self.retracted = true;
    }

    /// Combines two partial states (Chan et al.'s parallel update).
    fn merge(&mut self, other: &Comoments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let dx = other.mean_x - self.mean_x;
        let dy = other.mean_y - self.mean_y;
        self.m2_x += other.m2_x + dx * dx * na * nb / n;
        self.c_xy += other.c_xy + dx * dy * na * nb / n;
        self.mean_x += dx * nb / n;
        self.mean_y += dy * nb / n;
        self.n += other.n;
        self.retracted |= other.retracted;
    }

    /// The slope, or NULL with fewer than two points or no spread in cost. Adding and merging
    /// keep an all-equal spread at exactly 0; after removals, spread within rounding of the
    /// removed points counts as none.
    fn evaluate(&self) -> Option<f64> {
        let negligible = if self.retracted {
            4.0 * f64::EPSILON * self.n as f64 * self.mean_x * self.mean_x
        } else {
            0.0
        };
        (self.n >= 2 && self.m2_x > negligible).then(|| self.c_xy / self.m2_x)
    }

    fn to_arrays(states: &[Self]) -> Vec<ArrayRef> {
        vec![
            Arc::new(states.iter().map(|s| s.n).collect::<UInt64Array>()),
            Arc::new(states.iter().map(|s| s.mean_x).collect::<Float64Array>()),
            Arc::new(states.iter().map(|s| s.mean_y).collect::<Float64Array>()),
            Arc::new(states.iter().map(|s| s.m2_x).collect::<Float64Array>()),
            Arc::new(states.iter().map(|s| s.c_xy).collect::<Float64Array>()),
        ]
    }

    fn from_arrays(arrays: &[ArrayRef], row: usize) -> Self {
        let f = |i: usize| arrays[i].as_primitive::<Float64Type>().value(row);
        Comoments {
            n: arrays[0].as_primitive::<UInt64Type>().value(row),
            mean_x: f(1),
            mean_y: f(2),
            m2_x: f(3),
            c_xy: f(4),
            // A partial state's history is not shipped; merged states come from adds only.
            retracted: false,
        }
    }
}

const STATE: [(&str, DataType); 5] = [
    ("n", DataType::UInt64),
    ("mean_cost", DataType::Float64),
    ("mean_value", DataType::Float64),
    ("m2_cost", DataType::Float64),
    ("c_cost_value", DataType::Float64),
];

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "Business value gained per extra dollar of inference: the least-squares slope of value on \
         cost over the group (cov(cost, value) / var(cost)). Rows with a NULL in either argument \
         are ignored; NULL with fewer than two rows or no spread in cost. As a window function \
         over `ROWS BETWEEN 1 PRECEDING AND CURRENT ROW` ordered by cost it gives Δvalue / Δcost \
         between neighbouring spend levels. Numerically stable (running co-moments).",
        "marginal_token_utility(value, cost)",
    )
    .with_argument("value", "Business value of the row (e.g. outcomes.value_usd).")
    .with_argument("cost", "Inference spend of the row.")
    .with_sql_example(
        "```sql\n> SELECT workflow, marginal_token_utility(value_usd, spend_usd) FROM items GROUP BY workflow;\n```",
    )
    .build()
});

impl AggregateUDFImpl for MarginalTokenUtility {
    fn name(&self) -> &str {
        "marginal_token_utility"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [value, cost] if [value, cost].iter().all(|t| t.is_numeric() || t.is_null()) => {
                Ok(vec![DataType::Float64, DataType::Float64])
            }
            _ => plan_err!(
                "marginal_token_utility(value, cost) takes two numbers, got {arg_types:?}"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(STATE
            .iter()
            .map(|(name, ty)| {
                Arc::new(Field::new(
                    format!("{}[{name}]", args.name),
                    ty.clone(),
                    false,
                ))
            })
            .collect())
    }

    state_accumulators!(Comoments);

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slope_by_formula(points: &[(f64, f64)]) -> f64 {
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        sxy / sxx
    }

    #[test]
    fn add_merge_and_remove_agree_with_the_two_pass_formula() {
        let points: Vec<(f64, f64)> = (0..50)
            .map(|i| (1.0 + i as f64 * 0.37 % 5.0, 3.0 * i as f64 + (i % 7) as f64))
            .collect();
        let mut whole = Comoments::default();
        points.iter().for_each(|&p| whole.add(p));
        let expected = slope_by_formula(&points);
        assert!((whole.evaluate().unwrap() - expected).abs() < 1e-9 * expected.abs());

        let (mut left, mut right) = (Comoments::default(), Comoments::default());
        points[..17].iter().for_each(|&p| left.add(p));
        points[17..].iter().for_each(|&p| right.add(p));
        left.merge(&right);
        assert!((left.evaluate().unwrap() - expected).abs() < 1e-9 * expected.abs());

        // Remove the first ten points: the slope of the remaining forty.
        points[..10].iter().for_each(|&p| whole.remove(p));
        let rest = slope_by_formula(&points[10..]);
        assert!((whole.evaluate().unwrap() - rest).abs() < 1e-9 * rest.abs());
    }

    #[test]
    fn two_points_give_the_difference_quotient_and_flat_cost_gives_null() {
        let mut c = Comoments::default();
        c.add((2.0, 10.0));
        assert_eq!(c.evaluate(), None);
        c.add((4.0, 16.0));
        assert_eq!(c.evaluate(), Some(3.0));
        let mut flat = Comoments::default();
        flat.add((1.5, 1.0));
        flat.add((1.5, 9.0));
        assert_eq!(flat.evaluate(), None);
        // Flat again after a removal, despite rounding residue.
        let mut window = Comoments::default();
        for (x, y) in [(0.1, 5.0), (0.7, 7.0), (0.7, 9.0)] {
            window.add((x, y));
        }
        window.remove((0.1, 5.0));
        assert_eq!(window.evaluate(), None, "{window:?}");
    }
}
