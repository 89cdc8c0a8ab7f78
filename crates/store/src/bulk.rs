//! Bulk inserts, the hot path of ingestion.
//!
//! PostgreSQL gets one array parameter per column (`INSERT ... SELECT * FROM
//! UNNEST($1::text[], ...)`): a statement of a dozen parameters instead of
//! tens of thousands is far cheaper to parse, plan and bind. SQLite has no
//! arrays and gets multi-row VALUES, chunked below its parameter limit.

use patron_domain::ApiError;
use sea_orm::{
    ConnectionTrait, DbBackend, QueryResult, Statement, Value,
    sea_query::{ArrayType, Expr, ExprTrait, OnConflict, Query},
};

/// What an insert does with a row whose key already exists.
#[derive(Clone, Copy)]
pub(crate) enum Conflict {
    /// Fail the statement.
    Fail,
    /// Keep the stored row (the key column).
    Skip(&'static str),
    /// Replace the stored row, unless its `version` column is greater than
    /// the new row's.
    ReplaceUnlessNewer {
        key: &'static str,
        version: &'static str,
    },
}

impl Conflict {
    /// The clause for PostgreSQL's INSERT ... SELECT form.
    fn sql(self, table: &str, columns: &[&str]) -> String {
        match self {
            Conflict::Fail => String::new(),
            Conflict::Skip(key) => format!(" ON CONFLICT ({key}) DO NOTHING"),
            Conflict::ReplaceUnlessNewer { key, version } => {
                let sets: Vec<String> = columns
                    .iter()
                    .filter(|c| **c != key)
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                format!(
                    " ON CONFLICT ({key}) DO UPDATE SET {} WHERE {table}.{version} <= EXCLUDED.{version}",
                    sets.join(", ")
                )
            }
        }
    }

    /// The clause for sea-query's multi-row VALUES form.
    fn on_conflict(self, table: &'static str, columns: &[&'static str]) -> Option<OnConflict> {
        match self {
            Conflict::Fail => None,
            Conflict::Skip(key) => Some(OnConflict::column(key).do_nothing().to_owned()),
            Conflict::ReplaceUnlessNewer { key, version } => Some(
                OnConflict::column(key)
                    .update_columns(columns.iter().copied().filter(|c| *c != key))
                    .action_and_where(
                        Expr::col((table, version)).lte(Expr::col(("excluded", version))),
                    )
                    .to_owned(),
            ),
        }
    }
}

use crate::db_error;

/// SQLite binds at most 32,766 parameters per statement; stay below.
const MAX_SQLITE_PARAMS: usize = 30_000;

/// Inserts `rows` (values in `columns` order), handling existing keys as
/// `conflict` says; with `returning`, that column of every inserted row is
/// returned.
pub(crate) async fn insert<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    columns: &[&'static str],
    rows: Vec<Vec<Value>>,
    conflict: Conflict,
    returning: Option<&'static str>,
) -> Result<Vec<QueryResult>, ApiError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    match db.get_database_backend() {
        DbBackend::Postgres => match unnest_params(columns.len(), &rows) {
            Some((params, selects, casts)) => {
                let names: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
                let mut sql = format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM UNNEST({}) AS u({})",
                    columns.join(", "),
                    selects.join(", "),
                    casts.join(", "),
                    names.join(", ")
                );
                sql.push_str(&conflict.sql(table, columns));
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
            None => values_insert(db, table, columns, rows, conflict, returning).await,
        },
        _ => values_insert(db, table, columns, rows, conflict, returning).await,
    }
}

/// One array parameter per column, with the UNNEST casts and the select
/// expression of each. Array binding cannot carry NULL elements, so an
/// integer column holding NULLs travels as text ("" for NULL) and is cast
/// back; `None` (use VALUES instead) if a column cannot be sent as an array.
fn unnest_params(
    width: usize,
    rows: &[Vec<Value>],
) -> Option<(Vec<Value>, Vec<String>, Vec<String>)> {
    let mut params = Vec::with_capacity(width);
    let mut selects = Vec::with_capacity(width);
    let mut casts = Vec::with_capacity(width);
    for c in 0..width {
        let column: Vec<&Value> = rows.iter().map(|r| r.get(c)).collect::<Option<_>>()?;
        let ty = column[0].array_type();
        let same_type = column.iter().all(|v| v.array_type() == ty);
        let has_null = column.iter().any(|v| !v.is_some());
        let n = c + 1;
        if same_type && !has_null {
            casts.push(format!("${n}::{}[]", pg_type(&ty)?));
            selects.push(format!("u.c{n}"));
            params.push(Value::Array(
                ty,
                Some(Box::new(column.into_iter().cloned().collect())),
            ));
        } else if same_type && matches!(ty, ArrayType::BigInt | ArrayType::Int) {
            let text: Vec<Value> = column
                .iter()
                .map(|v| {
                    Value::from(match v {
                        Value::BigInt(Some(i)) => i.to_string(),
                        Value::Int(Some(i)) => i.to_string(),
                        _ => String::new(),
                    })
                })
                .collect();
            casts.push(format!("${n}::text[]"));
            selects.push(format!("NULLIF(u.c{n}, '')::{}", pg_type(&ty)?));
            params.push(Value::Array(ArrayType::String, Some(Box::new(text))));
        } else {
            return None;
        }
    }
    Some((params, selects, casts))
}

async fn values_insert<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    columns: &[&'static str],
    rows: Vec<Vec<Value>>,
    conflict: Conflict,
    returning: Option<&'static str>,
) -> Result<Vec<QueryResult>, ApiError> {
    let mut out = Vec::new();
    let per_statement = (MAX_SQLITE_PARAMS / columns.len()).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut insert = Query::insert();
        insert.into_table(table).columns(columns.iter().copied());
        if let Some(on_conflict) = conflict.on_conflict(table, columns) {
            insert.on_conflict(on_conflict);
        }
        if let Some(column) = returning {
            insert.returning_col(column);
        }
        for row in rows.by_ref().take(per_statement) {
            insert
                .values(row.into_iter().map(Into::into))
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

fn pg_type(ty: &ArrayType) -> Option<&'static str> {
    Some(match ty {
        ArrayType::String => "text",
        ArrayType::BigInt => "int8",
        ArrayType::Int => "int4",
        ArrayType::Bool => "bool",
        ArrayType::Bytes => "bytea",
        ArrayType::ChronoDateTimeUtc => "timestamptz",
        ArrayType::ChronoDate => "date",
        _ => return None,
    })
}
