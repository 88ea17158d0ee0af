//! Corrections to how the pinned SQL parser (sqlparser 0.62) reads some SQL, applied to every
//! statement before it is planned, so tokenledger answers as the SQL standard, PostgreSQL and
//! DuckDB do.
//!
//! **`IS [NOT] DISTINCT FROM` and `AND`/`OR`.** The parser reads the right operand of
//! `IS [NOT] DISTINCT FROM` with too low a precedence, so the operand swallows every `AND` and
//! `OR` after it: `a IS DISTINCT FROM b AND c` is read as `a IS DISTINCT FROM (b AND c)`
//! instead of `(a IS DISTINCT FROM b) AND c`, which changes answers silently (or fails on text
//! columns with a type error). `IS` binds tighter than `NOT`, `AND` and `OR`, so the
//! correction moves the comparison down onto the leftmost operand of the `AND`/`OR` tree it
//! swallowed, then mends what sat above the comparison the same way: a `NOT` over it moves
//! down onto that operand too, and an `AND` whose right side has become an `OR` is turned
//! into the `OR` of that `AND` (`x AND a IS DISTINCT FROM b OR c` is
//! `(x AND a IS DISTINCT FROM b) OR c`). The parser never builds either shape itself (`NOT` and
//! `AND` bind tighter than what follows them), so only the corrected trees are touched.
//! Parentheses the user wrote stay as written: the parser keeps them as nested expressions,
//! which are left alone. Fixed upstream in later sqlparser releases; remove this
//! when the pinned stack moves to one.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, UnaryOperator, Value, visit_expressions_mut,
};

/// Corrects `statement` in place (see the module documentation).
pub fn correct(statement: &mut Statement) {
    match statement {
        Statement::Statement(inner) => {
            let _ = visit_expressions_mut(inner.as_mut(), reassociate);
        }
        Statement::Explain(explain) => correct(&mut explain.statement),
        Statement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &mut copy.source {
                let _ = visit_expressions_mut(query.as_mut(), reassociate);
            }
        }
        Statement::CreateExternalTable(_) | Statement::Reset(_) => {}
    }
}

/// Called on each expression after its operands (post-order), so trees are corrected from
/// the inside out.
fn reassociate(expr: &mut Expr) -> ControlFlow<()> {
    match expr {
        Expr::IsDistinctFrom(_, right) | Expr::IsNotDistinctFrom(_, right) if is_and_or(right) => {
            distinct_onto_leftmost(expr)
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: operand,
        } if is_and_or(operand) => not_onto_leftmost(expr),
        Expr::BinaryOp {
            op: BinaryOperator::And,
            right,
            ..
        } if is_or(right) => and_over_or(expr),
        _ => {}
    }
    ControlFlow::Continue(())
}

/// `a IS [NOT] DISTINCT FROM (x AND/OR …)`, where the parser (not the user) grouped the right
/// side, becomes the `AND`/`OR` tree with its leftmost operand `x` compared to `a`.
fn distinct_onto_leftmost(expr: &mut Expr) {
    let (left, mut tree, negated) = match std::mem::replace(expr, placeholder()) {
        Expr::IsDistinctFrom(left, right) => (left, *right, false),
        Expr::IsNotDistinctFrom(left, right) => (left, *right, true),
        _ => unreachable!("matched above"),
    };
    let leaf = leftmost(&mut tree);
    let operand = Box::new(std::mem::replace(leaf, placeholder()));
    *leaf = if negated {
        Expr::IsNotDistinctFrom(left, operand)
    } else {
        Expr::IsDistinctFrom(left, operand)
    };
    *expr = tree;
}

/// `NOT (x AND/OR …)` built by a correction becomes the tree with `NOT x` in `x`'s place.
fn not_onto_leftmost(expr: &mut Expr) {
    let Expr::UnaryOp { expr: operand, .. } = std::mem::replace(expr, placeholder()) else {
        unreachable!("matched by the caller")
    };
    let mut tree = *operand;
    let leaf = leftmost(&mut tree);
    let negated = std::mem::replace(leaf, placeholder());
    *leaf = Expr::UnaryOp {
        op: UnaryOperator::Not,
        expr: Box::new(negated),
    };
    *expr = tree;
}

/// `x AND (p OR q)` built by a correction becomes `(x AND p) OR q`, and so on down a chain of
/// `OR`s on the left.
fn and_over_or(expr: &mut Expr) {
    let Expr::BinaryOp {
        left: x, right: or, ..
    } = std::mem::replace(expr, placeholder())
    else {
        unreachable!("matched by the caller")
    };
    let Expr::BinaryOp {
        left: p, right: q, ..
    } = *or
    else {
        unreachable!("matched by the caller")
    };
    let mut and = Expr::BinaryOp {
        left: x,
        op: BinaryOperator::And,
        right: p,
    };
    if matches!(&and, Expr::BinaryOp { right, .. } if is_or(right)) {
        and_over_or(&mut and);
    }
    *expr = Expr::BinaryOp {
        left: Box::new(and),
        op: BinaryOperator::Or,
        right: q,
    };
}

fn is_or(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::BinaryOp {
            op: BinaryOperator::Or,
            ..
        }
    )
}

fn is_and_or(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::BinaryOp {
            op: BinaryOperator::And | BinaryOperator::Or,
            ..
        }
    )
}

/// The leftmost operand of an `AND`/`OR` tree (not looking inside parentheses).
fn leftmost(expr: &mut Expr) -> &mut Expr {
    if is_and_or(expr) {
        let Expr::BinaryOp { left, .. } = expr else {
            unreachable!("checked by is_and_or")
        };
        return leftmost(left);
    }
    expr
}

/// A value to leave in a slot while its expression is moved.
fn placeholder() -> Expr {
    Expr::value(Value::Null)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Statement as SqlStatement};

    use super::*;

    /// The corrected tree of `SELECT <expression>`, written with every grouping explicit:
    /// `IS DISTINCT FROM` as `IDF`, `IS NOT DISTINCT FROM` as `INDF`, parentheses the user
    /// wrote as `[…]`. (The SQL text alone would print the same before and after.)
    fn shape(expression: &str) -> String {
        let sql = format!("SELECT {expression}");
        let mut statement = DFParser::parse_sql(&sql).unwrap().pop_front().unwrap();
        correct(&mut statement);
        let Statement::Statement(inner) = statement else {
            panic!("{sql}")
        };
        let SqlStatement::Query(query) = *inner else {
            panic!("{sql}")
        };
        let SetExpr::Select(select) = *query.body else {
            panic!("{sql}")
        };
        let SelectItem::UnnamedExpr(expr) = &select.projection[0] else {
            panic!("{sql}")
        };
        written(expr)
    }

    fn written(expr: &Expr) -> String {
        match expr {
            Expr::IsDistinctFrom(a, b) => format!("({} IDF {})", written(a), written(b)),
            Expr::IsNotDistinctFrom(a, b) => format!("({} INDF {})", written(a), written(b)),
            Expr::BinaryOp { left, op, right } => {
                format!("({} {op} {})", written(left), written(right))
            }
            Expr::UnaryOp { op, expr } => format!("({op} {})", written(expr)),
            Expr::Nested(inner) => format!("[{}]", written(inner)),
            other => other.to_string(),
        }
    }

    #[test]
    fn the_comparison_takes_its_own_operand_and_parentheses_stay() {
        let cases = [
            ("a IS DISTINCT FROM b AND c", "((a IDF b) AND c)"),
            ("a IS DISTINCT FROM (b AND c)", "(a IDF [(b AND c)])"),
            (
                "a IS NOT DISTINCT FROM b OR c AND d",
                "((a INDF b) OR (c AND d))",
            ),
            (
                "NOT a IS NOT DISTINCT FROM b AND c",
                "((NOT (a INDF b)) AND c)",
            ),
            (
                "c AND a IS DISTINCT FROM b OR d",
                "((c AND (a IDF b)) OR d)",
            ),
        ];
        for (expression, expected) in cases {
            assert_eq!(shape(expression), expected, "{expression}");
        }
        // What the parser reads right is left as it was.
        assert_eq!(shape("a AND b IS DISTINCT FROM c"), "(a AND (b IDF c))");
        assert_eq!(shape("NOT a AND b OR c"), "(((NOT a) AND b) OR c)");
    }
}
