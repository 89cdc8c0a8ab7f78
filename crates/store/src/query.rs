//! Turns a type-checked [`Filter`] into a sea-query condition. Values are
//! always bound parameters, never spliced into SQL text.

use patron_domain::{
    ApiError,
    filter::{CmpOp, Filter, Value},
};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, LikeExpr, SimpleExpr};

/// How a filter field maps onto a column.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// A plain column compared with the value.
    Plain(&'static str),
    /// A "|a|b|" delimited column; `:` is a LIKE.
    Delimited(&'static str),
    /// `true` when the column is NOT NULL.
    IsSet(&'static str),
}

/// Builds the condition; `column` maps each field name of the schema.
pub fn condition(
    filter: &Filter,
    column: &dyn Fn(&str) -> Option<Column>,
) -> Result<Condition, ApiError> {
    Ok(match filter {
        Filter::And(parts) => {
            let mut c = Condition::all();
            for p in parts {
                c = c.add(condition(p, column)?);
            }
            c
        }
        Filter::Or(parts) => {
            let mut c = Condition::any();
            for p in parts {
                c = c.add(condition(p, column)?);
            }
            c
        }
        Filter::Not(inner) => condition(inner, column)?.not(),
        Filter::Has { field, value } => match column(field) {
            Some(Column::Delimited(col)) => Condition::all().add(
                Expr::col(col)
                    .like(LikeExpr::new(format!("%|{}|%", escape_like(value))).escape('\\')),
            ),
            _ => return Err(unknown(field)),
        },
        Filter::Compare { field, op, value } => match column(field) {
            Some(Column::Plain(col)) => Condition::all().add(compare(col, *op, value)),
            Some(Column::IsSet(col)) => {
                let set = match value {
                    Value::Bool(b) => *b,
                    _ => return Err(unknown(field)),
                };
                let want_set = set == (*op == CmpOp::Eq);
                let e = if want_set {
                    Expr::col(col).is_not_null()
                } else {
                    Expr::col(col).is_null()
                };
                Condition::all().add(e)
            }
            _ => return Err(unknown(field)),
        },
    })
}

fn unknown(field: &str) -> ApiError {
    ApiError::internal(format!("filter field {field} has no column mapping"))
}

fn compare(col: &'static str, op: CmpOp, value: &Value) -> SimpleExpr {
    if let Value::Prefix(prefix) = value {
        return Expr::col(col)
            .like(LikeExpr::new(format!("{}%", escape_like(prefix))).escape('\\'));
    }
    let v: sea_orm::Value = match value {
        Value::Text(s) | Value::Prefix(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::Timestamp(t) => (*t).into(),
        Value::Date(d) => (*d).into(),
        Value::Integer(i) => (*i).into(),
    };
    let c = Expr::col(col);
    match op {
        CmpOp::Eq => c.eq(v),
        CmpOp::Ne => c.ne(v),
        CmpOp::Lt => c.lt(v),
        CmpOp::Le => c.lte(v),
        CmpOp::Gt => c.gt(v),
        CmpOp::Ge => c.gte(v),
    }
}

/// Escapes LIKE wildcards so user text only ever matches literally.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An id list for `IN (...)`, padded to a power of two by repeating its
/// last id (which changes no result): the statement's text then takes one
/// of a few shapes whatever the number of ids. Each distinct text is a
/// prepared statement the driver caches per connection, so lists of every
/// length would fill that cache with near-copies.
pub(crate) fn padded<T: Clone>(ids: &[T]) -> impl Iterator<Item = T> + '_ {
    let extra = ids.len().next_power_of_two() - ids.len();
    ids.iter().cloned().chain(
        ids.last()
            .into_iter()
            .flat_map(move |last| std::iter::repeat_n(last.clone(), extra)),
    )
}

/// Rows after `after` in (revision, customer_id) order: `(revision,
/// customer_id) > (r, id)`, or `revision > r` without an id.
///
/// A row-value comparison, because PostgreSQL and SQLite both start an
/// index range scan of a (revision, customer_id) index at it. Spelled out as
/// `revision > r OR (revision = r AND customer_id > id)` neither does: each
/// page then scans the index from the start of revision `r`, so following
/// a recompute (a million rows in one revision) page by page was quadratic
/// (1.6 s of PostgreSQL per page at the end).
pub fn after_position(revision: Expr, customer_id: Expr, after: (i64, Option<&str>)) -> SimpleExpr {
    match after.1 {
        None => revision.gt(after.0),
        Some(id) => Expr::tuple([revision, customer_id])
            .gt(Expr::tuple([Expr::value(after.0), Expr::value(id)])),
    }
}

/// Up to `limit` rows of `table` after `after` in (revision, customer id)
/// order: a range of its (revision, customer_id) index. With `ORDER BY ...
/// LIMIT` the planner walks that index even where it has no statistics for
/// the table yet (see [`after_position`] for the start of the range).
pub fn page_after<const N: usize>(
    table: &'static str,
    columns: [&'static str; N],
    after: (i64, Option<&str>),
    limit: u64,
) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .columns(columns)
        .from(table)
        .cond_where(after_position(
            Expr::col("revision"),
            Expr::col("customer_id"),
            after,
        ))
        .order_by("revision", sea_orm::Order::Asc)
        .order_by("customer_id", sea_orm::Order::Asc)
        .limit(limit)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{PostgresQueryBuilder, Query, SqliteQueryBuilder};

    use super::*;

    /// The resume condition must stay a row-value comparison: that is what
    /// both databases turn into the start of an index range (see
    /// [`after_position`]).
    #[test]
    fn a_resumed_page_starts_at_the_cursor_as_a_row_value() {
        let sql = |after, postgres: bool| {
            let mut q = Query::select();
            q.column("score")
                .from("scoring_scores")
                .cond_where(after_position(
                    Expr::col("revision"),
                    Expr::col("customer_id"),
                    after,
                ));
            if postgres {
                q.to_string(PostgresQueryBuilder)
            } else {
                q.to_string(SqliteQueryBuilder)
            }
        };
        for postgres in [true, false] {
            assert!(
                sql((7, Some("c-9")), postgres)
                    .ends_with(r#"WHERE ("revision", "customer_id") > (7, 'c-9')"#),
                "{}",
                sql((7, Some("c-9")), postgres)
            );
            assert!(sql((7, None), postgres).ends_with(r#"WHERE "revision" > 7"#));
        }
    }
}
