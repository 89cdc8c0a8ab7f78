//! Bulk inserts and upserts, the hot path of ingestion and of every
//! follower of a feed.
//!
//! PostgreSQL gets one array parameter per column (`INSERT ... SELECT ... FROM
//! UNNEST($1::text[], ...)`): a statement of a dozen parameters instead of
//! tens of thousands is far cheaper to parse, plan and bind, and its text does
//! not depend on the number of rows, so one prepared statement serves every
//! batch (statements whose text varies with the row count each take a slot of
//! tens of KB in the driver's per-connection statement cache). SQLite has no
//! arrays and gets multi-row VALUES, in chunks whose sizes are powers of two
//! for the same reason: a handful of distinct statements per table.

use patron_domain::ApiError;
use sea_orm::{
    ConnectionTrait, DbBackend, QueryResult, Statement, Value,
    sea_query::{ArrayType, Expr, ExprTrait, OnConflict, Query, SimpleExpr},
};

use crate::db_error;

/// What an insert does with a row whose key already exists.
#[derive(Clone, Copy)]
pub(crate) enum Conflict<'a> {
    /// Fail the statement.
    Fail,
    /// Keep the stored row (the key columns).
    Skip(&'a [&'static str]),
    /// Update `columns` of the stored row (the key columns) as `how` says.
    Update {
        key: &'a [&'static str],
        columns: &'a [&'static str],
        how: Update,
    },
}

/// How a conflicting row's columns are updated.
#[derive(Clone, Copy)]
pub(crate) enum Update {
    /// Take the new values.
    Replace,
    /// Add the new values to the stored ones (counters, sums).
    Add,
    /// Take the new values unless the stored row's `version` column is
    /// greater than the new row's.
    ReplaceUnlessNewer(&'static str),
    /// Take the new values where any differs from the stored one, and
    /// leave an equal row alone (no new row version, no write-ahead log).
    /// For NOT NULL columns.
    ReplaceIfDifferent,
}

impl Conflict<'_> {
    /// The clause for PostgreSQL's INSERT ... SELECT form.
    fn sql(self, table: &str) -> String {
        match self {
            Conflict::Fail => String::new(),
            Conflict::Skip(key) => format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")),
            Conflict::Update { key, columns, how } => {
                let sets: Vec<String> = columns
                    .iter()
                    .map(|c| match how {
                        Update::Add => format!("{c} = {table}.{c} + EXCLUDED.{c}"),
                        _ => format!("{c} = EXCLUDED.{c}"),
                    })
                    .collect();
                let mut sql = format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    sets.join(", ")
                );
                match how {
                    Update::ReplaceUnlessNewer(version) => {
                        sql.push_str(&format!(" WHERE {table}.{version} <= EXCLUDED.{version}"));
                    }
                    Update::ReplaceIfDifferent => {
                        let differs: Vec<String> = columns
                            .iter()
                            .map(|c| format!("{table}.{c} <> EXCLUDED.{c}"))
                            .collect();
                        sql.push_str(&format!(" WHERE {}", differs.join(" OR ")));
                    }
                    Update::Replace | Update::Add => {}
                }
                sql
            }
        }
    }

    /// The clause for sea-query's multi-row VALUES form.
    fn on_conflict(self, table: &'static str) -> Option<OnConflict> {
        match self {
            Conflict::Fail => None,
            Conflict::Skip(key) => Some(
                OnConflict::columns(key.iter().copied())
                    .do_nothing()
                    .to_owned(),
            ),
            Conflict::Update { key, columns, how } => {
                let mut on_conflict = OnConflict::columns(key.iter().copied());
                match how {
                    Update::Add => {
                        for c in columns {
                            on_conflict
                                .value(*c, Expr::col((table, *c)).add(Expr::col(("excluded", *c))));
                        }
                    }
                    Update::Replace => {
                        on_conflict.update_columns(columns.iter().copied());
                    }
                    Update::ReplaceUnlessNewer(version) => {
                        on_conflict
                            .update_columns(columns.iter().copied())
                            .action_and_where(
                                Expr::col((table, version)).lte(Expr::col(("excluded", version))),
                            );
                    }
                    Update::ReplaceIfDifferent => {
                        on_conflict.update_columns(columns.iter().copied());
                        let differs = columns
                            .iter()
                            .map(|c| Expr::col((table, *c)).ne(Expr::col(("excluded", *c))))
                            .reduce(|a, b| a.or(b));
                        if let Some(differs) = differs {
                            on_conflict.action_and_where(differs);
                        }
                    }
                }
                Some(on_conflict.to_owned())
            }
        }
    }
}

/// SQLite binds at most 32,766 parameters per statement; stay below.
const MAX_SQLITE_PARAMS: usize = 30_000;

/// Inserts `rows` (values in `columns` order), handling existing keys as
/// `conflict` says; with `returning`, that column of every inserted or
/// updated row is returned.
pub(crate) async fn insert<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    columns: &[&'static str],
    rows: Vec<Vec<Value>>,
    conflict: Conflict<'_>,
    returning: Option<&'static str>,
) -> Result<Vec<QueryResult>, ApiError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    match db.get_database_backend() {
        DbBackend::Postgres => match unnest_params(columns.len(), rows) {
            Ok((params, selects, casts)) => {
                let names: Vec<String> = (1..=casts.len()).map(|i| format!("c{i}")).collect();
                let mut sql = format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM UNNEST({}) AS u({})",
                    columns.join(", "),
                    selects.join(", "),
                    casts.join(", "),
                    names.join(", ")
                );
                sql.push_str(&conflict.sql(table));
                if let Some(column) = returning {
                    sql.push_str(&format!(" RETURNING {column}"));
                }
                db.query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    params,
                ))
                .await
                .map_err(db_error)
            }
            Err(rows) => values_insert(db, table, columns, rows, conflict, returning).await,
        },
        _ => values_insert(db, table, columns, rows, conflict, returning).await,
    }
}

/// One array parameter per column, with the UNNEST casts and the select
/// expression of each. Array binding cannot carry NULL elements, so a
/// column holding NULLs travels as two arrays: its values (a placeholder
/// where NULL) and a boolean array marking the NULLs. The arrays are
/// unnested together, so the statement's text depends only on which
/// columns hold NULLs, not on the number of rows. Gives the rows back
/// (use VALUES instead) if a column cannot be sent as an array.
type UnnestParams = (Vec<Value>, Vec<String>, Vec<String>);

fn unnest_params(width: usize, rows: Vec<Vec<Value>>) -> Result<UnnestParams, Vec<Vec<Value>>> {
    // First decide, by looking: each column's type and whether it has NULLs.
    let mut plan = Vec::with_capacity(width);
    for c in 0..width {
        let Some(first) = rows[0].get(c) else {
            return Err(rows);
        };
        let ty = first.array_type();
        let mut has_null = false;
        for r in &rows {
            match r.get(c) {
                Some(v) if v.array_type() == ty => has_null |= !v.is_some(),
                _ => return Err(rows),
            }
        }
        match (pg_type(&ty), placeholder(&ty)) {
            (Some(pg), Some(placeholder)) => plan.push((ty, pg, has_null.then_some(placeholder))),
            _ => return Err(rows),
        }
    }
    // Then move the values into their column arrays (no copies).
    let n = rows.len();
    let mut columns: Vec<Vec<Value>> = (0..width).map(|_| Vec::with_capacity(n)).collect();
    let mut nulls: Vec<Vec<Value>> = plan
        .iter()
        .map(|(_, _, p)| {
            if p.is_some() {
                Vec::with_capacity(n)
            } else {
                Vec::new()
            }
        })
        .collect();
    for row in rows {
        for (c, v) in row.into_iter().enumerate().take(width) {
            match &plan[c].2 {
                Some(placeholder) => {
                    let null = !v.is_some();
                    nulls[c].push(Value::from(null));
                    columns[c].push(if null { placeholder.clone() } else { v });
                }
                None => columns[c].push(v),
            }
        }
    }
    let mut params = Vec::with_capacity(width);
    let mut selects = Vec::with_capacity(width);
    let mut casts = Vec::with_capacity(width);
    // The n-th array is parameter $n and column u.cn of the UNNEST.
    let next = |casts: &mut Vec<String>, ty: &str| {
        casts.push(format!("${}::{ty}[]", casts.len() + 1));
        casts.len()
    };
    for (((ty, pg, placeholder), values), mask) in plan.into_iter().zip(columns).zip(nulls) {
        let n = next(&mut casts, pg);
        params.push(Value::Array(ty, Some(Box::new(values))));
        if placeholder.is_some() {
            let m = next(&mut casts, "bool");
            selects.push(format!("CASE WHEN u.c{m} THEN NULL ELSE u.c{n} END"));
            params.push(Value::Array(ArrayType::Bool, Some(Box::new(mask))));
        } else {
            selects.push(format!("u.c{n}"));
        }
    }
    Ok((params, selects, casts))
}

/// A stand-in for NULL in a value array (the NULL mask says which).
fn placeholder(ty: &ArrayType) -> Option<Value> {
    Some(match ty {
        ArrayType::String => Value::from(String::new()),
        ArrayType::BigInt => Value::from(0i64),
        ArrayType::Int => Value::from(0i32),
        ArrayType::Bool => Value::from(false),
        ArrayType::Double => Value::from(0f64),
        ArrayType::Bytes => Value::from(Vec::<u8>::new()),
        ArrayType::ChronoDateTimeUtc => Value::from(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
        ArrayType::ChronoDate => Value::from(chrono::DateTime::UNIX_EPOCH.date_naive()),
        _ => return None,
    })
}

fn pg_type(ty: &ArrayType) -> Option<&'static str> {
    Some(match ty {
        ArrayType::String => "text",
        ArrayType::BigInt => "int8",
        ArrayType::Int => "int4",
        ArrayType::Bool => "bool",
        ArrayType::Double => "float8",
        ArrayType::Bytes => "bytea",
        ArrayType::ChronoDateTimeUtc => "timestamptz",
        ArrayType::ChronoDate => "date",
        _ => return None,
    })
}

/// Splits `n` rows into statements of at most `max` rows whose sizes are
/// powers of two, largest first: any batch size is served by a few
/// distinct statement texts.
pub(crate) fn power_of_two_chunks(mut n: usize, max: usize) -> impl Iterator<Item = usize> {
    let max = 1usize << max.max(1).ilog2();
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= max { max } else { 1 << n.ilog2() };
        n -= size;
        Some(size)
    })
}

async fn values_insert<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    columns: &[&'static str],
    rows: Vec<Vec<Value>>,
    conflict: Conflict<'_>,
    returning: Option<&'static str>,
) -> Result<Vec<QueryResult>, ApiError> {
    let mut out = Vec::new();
    let max_rows = (MAX_SQLITE_PARAMS / columns.len()).max(1);
    let mut rows = rows.into_iter();
    for size in power_of_two_chunks(rows.len(), max_rows) {
        let mut insert = Query::insert();
        insert.into_table(table).columns(columns.iter().copied());
        if let Some(on_conflict) = conflict.on_conflict(table) {
            insert.on_conflict(on_conflict);
        }
        if let Some(column) = returning {
            insert.returning_col(column);
        }
        for row in rows.by_ref().take(size) {
            insert
                .values(row.into_iter().map(SimpleExpr::from))
                .map_err(|e| ApiError::internal(format!("insert values: {e}")))?;
        }
        if returning.is_some() {
            out.extend(db.query_all(&insert).await.map_err(db_error)?);
        } else {
            db.execute(&insert).await.map_err(db_error)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Database};

    /// Upserts (k, v) with [`Update::ReplaceIfDifferent`]: the keys written.
    async fn upsert<C: ConnectionTrait>(db: &C, table: &'static str, k: &str, v: &str) -> usize {
        let conflict = Conflict::Update {
            key: &["k"],
            columns: &["v"],
            how: Update::ReplaceIfDifferent,
        };
        let rows = vec![vec![k.into(), v.into()]];
        insert(db, table, &["k", "v"], rows, conflict, Some("k"))
            .await
            .unwrap()
            .len()
    }

    /// SQLite always; PostgreSQL when `DATABASE_URL` names one (as in CI).
    #[tokio::test]
    async fn an_equal_row_is_left_alone_and_a_different_one_replaced() {
        let mut urls = vec!["sqlite::memory:".to_owned()];
        urls.extend(
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| u.starts_with("postgres")),
        );
        for url in urls {
            let db = Database::connect(&url).await.unwrap();
            let table = "bulk_replace_if_different_test";
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await
                .unwrap();
            db.execute_unprepared(&format!(
                "CREATE TABLE {table} (k TEXT PRIMARY KEY, v TEXT NOT NULL)"
            ))
            .await
            .unwrap();
            assert_eq!(upsert(&db, table, "a", "x").await, 1, "{url}: inserted");
            assert_eq!(
                upsert(&db, table, "a", "x").await,
                0,
                "{url}: equal, untouched"
            );
            assert_eq!(
                upsert(&db, table, "a", "y").await,
                1,
                "{url}: different, replaced"
            );
            let v: String = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT v FROM {table}"),
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get("", "v")
                .unwrap();
            assert_eq!(v, "y", "{url}");
            db.execute_unprepared(&format!("DROP TABLE {table}"))
                .await
                .unwrap();
        }
    }

    #[test]
    fn chunks_are_powers_of_two_covering_every_row() {
        for max in [1, 2, 3, 500, 1_364, 30_000] {
            for n in 0..3_000 {
                let sizes: Vec<usize> = power_of_two_chunks(n, max).collect();
                assert_eq!(sizes.iter().sum::<usize>(), n, "n={n} max={max}");
                assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= max));
                assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
            }
        }
    }
}
