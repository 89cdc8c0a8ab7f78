//! Scoring's purchase read model becomes one row per customer:
//! `scoring_customer_histories (customer_id, days)` replaces
//! `scoring_customer_days (customer_id, day, amount_nanos, cost_nanos,
//! transactions)`, one row per customer and day.
//!
//! `days` packs the customer's days in day order, 24 bytes each, big-endian:
//! day (4), amount_nanos (8), cost_nanos (8), transactions (4). A full
//! recompute reads every row, and PostgreSQL's cost per row sent, not per
//! byte, bounded that read (see `patron-store`'s `purchase_days.rs`).
//!
//! The old rows are packed in SQL, in one statement: on PostgreSQL with
//! `int4send` / `int8send` (which write big-endian), on SQLite as hex
//! digits turned into bytes by `unhex`. On PostgreSQL the old table is
//! locked first, so a feed batch that a pod of the previous version
//! commits while the migration runs is either in the copy or fails (its
//! table is gone) and is retried by that pod until it is replaced; its
//! cursor moves only with its batch, so nothing is lost.
//!
//! Going back unpacks them again: in SQL on PostgreSQL (each field's bytes
//! cast through a bit string), row by row here on SQLite.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{DbBackend, Statement},
};

use crate::{m20261126_000012_bytewise_ids::collate, run_batch};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000015_scoring_customer_histories"
    }
}

const OLD: &str = "scoring_customer_days";
const NEW: &str = "scoring_customer_histories";
/// Bytes per packed day.
const DAY_BYTES: usize = 24;

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        let create = Table::create()
            .table(NEW)
            .col(
                ColumnDef::new("customer_id")
                    .string()
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new("days").blob().not_null())
            .to_owned();
        let pack = if backend == DbBackend::Postgres {
            "string_agg(int4send(day) || int8send(amount_nanos) || int8send(cost_nanos) \
             || int4send(transactions), ''::bytea ORDER BY day)"
        } else {
            // printf's %X writes a negative 64-bit value as its two's
            // complement; the 32-bit ones are masked to 32 bits first.
            "unhex(group_concat(printf('%08X%016X%016X%08X', day & 4294967295, amount_nanos, \
             cost_nanos, transactions & 4294967295), '' ORDER BY day))"
        };
        let mut statements = Vec::new();
        if backend == DbBackend::Postgres {
            statements.push(format!("LOCK TABLE {OLD} IN ACCESS EXCLUSIVE MODE"));
        }
        statements.extend([
            backend.build(&create).to_string(),
            format!(
                "INSERT INTO {NEW} (customer_id, days) \
                 SELECT customer_id, {pack} FROM {OLD} GROUP BY customer_id"
            ),
            format!("DROP TABLE {OLD}"),
        ]);
        run_batch(m, statements).await?;
        // Ids compare bytewise (PostgreSQL only).
        collate(m, &[(NEW, &["customer_id"])], "C").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        let create = Table::create()
            .table(OLD)
            .col(ColumnDef::new("customer_id").string().not_null())
            .col(ColumnDef::new("day").integer().not_null())
            .col(ColumnDef::new("amount_nanos").big_integer().not_null())
            .col(ColumnDef::new("cost_nanos").big_integer().not_null())
            .col(ColumnDef::new("transactions").integer().not_null())
            .primary_key(
                Index::create()
                    .col(Alias::new("customer_id"))
                    .col(Alias::new("day")),
            )
            .to_owned();
        check_whole_days(m).await?;
        let mut statements = vec![backend.build(&create).to_string()];
        if backend == DbBackend::Postgres {
            statements.push(unpack_in_sql());
        } else {
            statements.extend(unpack_row_by_row(m).await?);
        }
        statements.push(format!("DROP TABLE {NEW}"));
        run_batch(m, statements).await?;
        collate(m, &[(OLD, &["customer_id"])], "C").await
    }
}

/// The statement that refills the old table, unpacked in PostgreSQL: day
/// i of a history is bytes 24i..24i+24, each field's bytes read as a bit
/// string and cast to its (signed) integer type.
fn unpack_in_sql() -> String {
    let field = |offset: usize, bytes: usize| {
        format!(
            "('x' || encode(substring(days FROM i * {DAY_BYTES} + {} FOR {bytes}), 'hex'))::bit({})::int{bytes}",
            offset + 1,
            bytes * 8
        )
    };
    format!(
        "INSERT INTO {OLD} (customer_id, day, amount_nanos, cost_nanos, transactions) \
         SELECT customer_id, {}, {}, {}, {} FROM {NEW}, \
         generate_series(0, length(days) / {DAY_BYTES} - 1) AS i",
        field(0, 4),
        field(4, 8),
        field(12, 8),
        field(20, 4)
    )
}

/// Fails when a history is not a whole number of days (unpacking would
/// lose its tail).
async fn check_whole_days(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let backend = m.get_database_backend();
    let partial = m
        .get_connection()
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT customer_id FROM {NEW} WHERE length(days) % {DAY_BYTES} <> 0 LIMIT 1"),
        ))
        .await?;
    match partial.first() {
        Some(r) => Err(DbErr::Custom(format!(
            "{NEW}: customer {:?} has a partial day; not unpacked",
            r.try_get_by_index::<String>(0)?
        ))),
        None => Ok(()),
    }
}

/// The statements that refill the old table, unpacked here row by row
/// (SQLite has no SQL to read integers out of bytes; its databases are the
/// small, embedded ones).
async fn unpack_row_by_row(m: &SchemaManager<'_>) -> Result<Vec<String>, DbErr> {
    let backend = m.get_database_backend();
    let rows = m
        .get_connection()
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT customer_id, days FROM {NEW}"),
        ))
        .await?;
    let mut statements = Vec::new();
    let mut values: Vec<Vec<Value>> = Vec::new();
    for r in rows {
        let id: String = r.try_get_by_index(0)?;
        let days: Vec<u8> = r.try_get_by_index(1)?;
        for d in days.chunks_exact(DAY_BYTES) {
            let int4 = |at: usize| i32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
            let int8 = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&d[at..at + 8]);
                i64::from_be_bytes(b)
            };
            values.push(vec![
                id.clone().into(),
                int4(0).into(),
                int8(4).into(),
                int8(12).into(),
                int4(20).into(),
            ]);
        }
    }
    // Statements of at most 1,000 rows (SQLite's parameter limit), with
    // the values inlined: one batch, all or nothing.
    for chunk in values.chunks(1_000) {
        let mut insert = Query::insert();
        insert.into_table(OLD).columns([
            "customer_id",
            "day",
            "amount_nanos",
            "cost_nanos",
            "transactions",
        ]);
        for row in chunk {
            insert
                .values(row.iter().cloned().map(SimpleExpr::from))
                .map_err(|e| DbErr::Custom(e.to_string()))?;
        }
        statements.push(backend.build(&insert).to_string());
    }
    Ok(statements)
}
