//! Reading scoring's read model of purchase days (tens of millions of rows
//! for a full recompute) into the form the models take.
//!
//! Any backend goes through [`PurchaseDays`], row by row. On PostgreSQL a
//! full read instead streams the table with binary `COPY`, split in two by
//! block range and read over two connections at once, both importing the
//! snapshot of the caller's transaction (`pg_export_snapshot`), so the
//! result is exactly what that transaction sees. Binary COPY hands over
//! each row as a few length-prefixed fields: no per-row result metadata,
//! no integer formatting, and no allocation except for customers not seen
//! before.

use std::collections::HashMap;

use futures::TryStreamExt;
use patron_domain::{ApiError, models::summary::Purchase};
use sea_orm::{
    ConnectionTrait, DbBackend, Statement,
    sqlx::{self, Connection, Postgres, pool::PoolConnection},
};

use crate::db_error;

/// Customers numbered in order of first appearance, and one [`Purchase`]
/// per transaction: a row (customer, day) of the read model sums all
/// purchases on that day, and becomes one purchase carrying the day's
/// amounts plus one empty purchase per further transaction, so occasions,
/// sums and transaction counts (RFM frequency) all stay exact.
#[derive(Default)]
pub(crate) struct PurchaseDays {
    ids: Vec<String>,
    /// A full read looks up tens of millions of ids: foldhash, not SipHash
    /// (the ids are the server's own UUIDs, nothing to defend against).
    index: HashMap<String, u32, foldhash::fast::RandomState>,
    purchases: Vec<Purchase>,
}

impl PurchaseDays {
    /// Room for about `rows` rows, so a large read does not grow (and copy,
    /// and fault in) its buffers again and again.
    fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::new(),
            index: HashMap::default(),
            purchases: Vec::with_capacity(rows),
        }
    }

    pub(crate) fn push(&mut self, id: &str, day: i32, amount: i64, cost: i64, transactions: i32) {
        let customer = match self.index.get(id) {
            Some(c) => *c,
            None => {
                let c = self.ids.len() as u32;
                self.index.insert(id.to_owned(), c);
                self.ids.push(id.to_owned());
                c
            }
        };
        self.purchases.push(Purchase {
            customer,
            day,
            amount_nanos: amount,
            cost_nanos: cost,
        });
        for _ in 1..transactions {
            self.purchases.push(Purchase {
                customer,
                day,
                amount_nanos: 0,
                cost_nanos: 0,
            });
        }
    }

    /// Adds another part's rows (a customer may have rows in both).
    fn merge(&mut self, other: PurchaseDays) {
        let renumber: Vec<u32> = other
            .ids
            .into_iter()
            .map(|id| match self.index.get(&id) {
                Some(c) => *c,
                None => {
                    let c = self.ids.len() as u32;
                    self.ids.push(id.clone());
                    self.index.insert(id, c);
                    c
                }
            })
            .collect();
        self.purchases
            .extend(other.purchases.into_iter().map(|p| Purchase {
                customer: renumber[p.customer as usize],
                ..p
            }));
    }

    /// The customer ids and purchases, customers numbered in id order
    /// whatever order the rows came in: the fits sum over customers in that
    /// order, and must not depend on where the database stored the rows.
    pub(crate) fn finish(self) -> (Vec<String>, Vec<Purchase>) {
        let PurchaseDays {
            ids, mut purchases, ..
        } = self;
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
        let mut renumber = vec![0u32; ids.len()];
        for (new, old) in order.iter().enumerate() {
            renumber[*old as usize] = new as u32;
        }
        for p in &mut purchases {
            p.customer = renumber[p.customer as usize];
        }
        let mut ids: Vec<Option<String>> = ids.into_iter().map(Some).collect();
        let ids = order
            .iter()
            .map(|old| ids[*old as usize].take().unwrap_or_default())
            .collect();
        (ids, purchases)
    }
}

const TABLE: &str = "scoring_customer_days";
/// COPY messages (one row each) parsed between yields of the runtime
/// worker: a few milliseconds of work.
const YIELD_EVERY: u32 = 16_384;
const COLUMNS: &str = "customer_id, day, amount_nanos, cost_nanos, transactions";

/// Every purchase day, read with binary COPY over two connections that see
/// the snapshot of `txn` (a repeatable-read transaction on PostgreSQL).
pub(crate) async fn read_all_postgres<C: ConnectionTrait>(
    txn: &C,
    pool: &sqlx::PgPool,
) -> Result<PurchaseDays, ApiError> {
    let value =
        |sql: &str| txn.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()));
    let snapshot: String = value("SELECT pg_export_snapshot() AS s")
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::internal("pg_export_snapshot returned no row"))?
        .try_get("", "s")
        .map_err(db_error)?;
    // The table's size in blocks now (pg_class.relpages is only an
    // estimate, 0 until the table is first analyzed).
    let pages: i64 = value(&format!(
        "SELECT (pg_relation_size('{TABLE}') / current_setting('block_size')::int8) AS pages"
    ))
    .await
    .map_err(db_error)?
    .map(|r| r.try_get("", "pages"))
    .transpose()
    .map_err(db_error)?
    .unwrap_or(0);
    // Two halves by block number; the second is open-ended, so rows in
    // blocks added since are read too (those the snapshot sees).
    let middle = pages / 2;
    // Each part parses on its own task, so both cores work on it. About 81
    // rows fit in a block; reserve for a few more.
    let rows_per_block = 100;
    let part = |condition: String, reserve: i64| {
        let (pool, snapshot) = (pool.clone(), snapshot.clone());
        let reserve = usize::try_from(reserve * rows_per_block).unwrap_or(0);
        tokio::spawn(async move { copy_part(&pool, &snapshot, &condition, reserve).await })
    };
    // The first part takes the second in (see `merge`): room for both.
    let first = part(format!("ctid < '({middle},0)'::tid"), pages);
    let second = part(format!("ctid >= '({middle},0)'::tid"), pages - middle);
    let joined = |r: Result<Result<PurchaseDays, ApiError>, tokio::task::JoinError>| {
        r.map_err(|e| ApiError::internal(format!("reading purchase days: {e}")))?
    };
    let (a, b) = tokio::join!(first, second);
    let (mut all, b) = (joined(a)?, joined(b)?);
    all.merge(b);
    Ok(all)
}

/// The rows matching `condition`, in a transaction on its own connection
/// that imports `snapshot`.
async fn copy_part(
    pool: &sqlx::PgPool,
    snapshot: &str,
    condition: &str,
    reserve: usize,
) -> Result<PurchaseDays, ApiError> {
    // A snapshot id is hex digits and dashes; it is spliced into SQL.
    if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(ApiError::internal(format!(
            "unexpected snapshot id {snapshot:?}"
        )));
    }
    let mut conn: PoolConnection<Postgres> = pool.acquire().await.map_err(sqlx_error)?;
    let read = async {
        let mut txn = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(sqlx_error)?;
        // Checked above: hex digits and dashes only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET TRANSACTION SNAPSHOT '{snapshot}'"
        )))
        .execute(&mut *txn)
        .await
        .map_err(sqlx_error)?;
        let mut out = PurchaseDays::with_capacity(reserve);
        {
            let mut stream = txn
                .copy_out_raw(&format!(
                    "COPY (SELECT {COLUMNS} FROM {TABLE} WHERE {condition}) TO STDOUT (FORMAT binary)"
                ))
                .await
                .map_err(sqlx_error)?;
            let mut reader = CopyReader::default();
            let mut chunks = 0u32;
            while let Some(chunk) = stream.try_next().await.map_err(sqlx_error)? {
                reader.feed(&chunk, &mut out)?;
                // While PostgreSQL keeps the socket full this loop never
                // waits, and tokio takes the worker back only after many
                // socket reads (100 ms and more of parsing): every other
                // task on that worker (the feed consumer's round trips,
                // calls) would wait that long at each step.
                chunks = chunks.wrapping_add(1);
                if chunks.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                }
            }
            reader.finish()?;
        }
        txn.commit().await.map_err(sqlx_error)?;
        Ok(out)
    };
    let result = read.await;
    if result.is_err() {
        // It may have stopped mid-COPY or mid-transaction: do not hand it
        // back to the pool.
        conn.close_on_drop();
    }
    result
}

fn sqlx_error(e: sqlx::Error) -> ApiError {
    db_error(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
        std::sync::Arc::new(e),
    )))
}

/// Parses PostgreSQL's binary COPY format for rows of
/// (text, int4, int8, int8, int4), fed in chunks that may split a row.
#[derive(Default)]
struct CopyReader {
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
}

/// The 11-byte signature that opens a binary COPY.
pub(crate) const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyReader {
    fn feed(&mut self, chunk: &[u8], out: &mut PurchaseDays) -> Result<(), ApiError> {
        // PostgreSQL sends each row as its own message: parse straight from
        // it, and keep only a partial row's bytes for the next chunk.
        if self.pending.is_empty() {
            let used = self.parse(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.parse(&pending, out)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Parses what `buf` holds completely (header, rows, trailer): the bytes
    /// used.
    fn parse(&mut self, buf: &[u8], out: &mut PurchaseDays) -> Result<usize, ApiError> {
        let mut at = 0;
        if !self.header_done {
            // Signature, flags (4 bytes), header extension length (4) and
            // the extension itself.
            if buf.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("missing signature"));
            }
            let ext = be_u32(&buf[SIGNATURE.len() + 4..]) as usize;
            at = SIGNATURE.len() + 8 + ext;
            if buf.len() < at {
                return Ok(0);
            }
            self.header_done = true;
        }
        while !self.ended {
            match row(&buf[at..], out)? {
                Some(Row::Data(used)) => at += used,
                Some(Row::Trailer) => {
                    at += 2;
                    self.ended = true;
                }
                None => break,
            }
        }
        if self.ended && at < buf.len() {
            return Err(bad("data after the trailer"));
        }
        Ok(at)
    }

    fn finish(&self) -> Result<(), ApiError> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(bad("the stream ended before its trailer"))
        }
    }
}

/// What [`row`] found.
enum Row {
    /// A row of that many bytes, pushed.
    Data(usize),
    /// The end of the stream (2 bytes).
    Trailer,
}

/// Parses one row (or the trailer) at the start of `buf`; `None` if `buf`
/// holds only part of it.
fn row(buf: &[u8], out: &mut PurchaseDays) -> Result<Option<Row>, ApiError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(Row::Trailer));
    }
    if fields != 5 {
        return Err(bad("a row without 5 fields"));
    }
    let mut at = 2;
    let mut field = |len_expected: Option<usize>| -> Result<Option<&[u8]>, ApiError> {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = usize::try_from(len).map_err(|_| bad("a NULL in a NOT NULL column"))?;
        if len_expected.is_some_and(|l| l != len) {
            return Err(bad("a field of unexpected width"));
        }
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        let value = &buf[at + 4..at + 4 + len];
        at += 4 + len;
        Ok(Some(value))
    };
    let Some(id) = field(None)? else {
        return Ok(None);
    };
    let id = std::str::from_utf8(id).map_err(|_| bad("a customer id that is not UTF-8"))?;
    // One field at a time: after a partial one, the next must not be read.
    let Some(day) = field(Some(4))? else {
        return Ok(None);
    };
    let day = be_u32(day) as i32;
    let Some(amount) = field(Some(8))? else {
        return Ok(None);
    };
    let amount = be_u64(amount) as i64;
    let Some(cost) = field(Some(8))? else {
        return Ok(None);
    };
    let cost = be_u64(cost) as i64;
    let Some(transactions) = field(Some(4))? else {
        return Ok(None);
    };
    let transactions = be_u32(transactions) as i32;
    out.push(id, day, amount, cost, transactions);
    Ok(Some(Row::Data(at)))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn bad(what: &str) -> ApiError {
    ApiError::internal(format!("reading {TABLE} with COPY: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY of `rows`, as PostgreSQL writes it.
    fn copy_bytes(rows: &[(&str, i32, i64, i64, i32)]) -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend(0u32.to_be_bytes()); // flags
        b.extend(3u32.to_be_bytes()); // header extension, skipped
        b.extend([7, 7, 7]);
        for (id, day, amount, cost, n) in rows {
            b.extend(5i16.to_be_bytes());
            b.extend((id.len() as i32).to_be_bytes());
            b.extend(id.as_bytes());
            for field in [
                &day.to_be_bytes()[..],
                &amount.to_be_bytes()[..],
                &cost.to_be_bytes()[..],
                &n.to_be_bytes()[..],
            ] {
                b.extend((field.len() as i32).to_be_bytes());
                b.extend(field);
            }
        }
        b.extend((-1i16).to_be_bytes());
        b
    }

    fn direct(rows: &[(&str, i32, i64, i64, i32)]) -> (Vec<String>, Vec<Purchase>) {
        let mut out = PurchaseDays::default();
        for (id, day, amount, cost, n) in rows {
            out.push(id, *day, *amount, *cost, *n);
        }
        out.finish()
    }

    const ROWS: [(&str, i32, i64, i64, i32); 5] = [
        ("b", 19_000, 5_000_000_000, 1, 1),
        ("a", -3, -7, i64::MIN, 3),
        ("ü-ñ", 0, i64::MAX, 0, 1),
        ("b", 19_001, 0, 0, 2),
        ("", 1, 1, 1, 1),
    ];

    #[test]
    fn rows_split_anywhere_across_chunks_read_the_same() {
        let bytes = copy_bytes(&ROWS);
        let want = direct(&ROWS);
        for chunk in 1..=bytes.len() {
            let (mut reader, mut out) = (CopyReader::default(), PurchaseDays::default());
            for part in bytes.chunks(chunk) {
                reader.feed(part, &mut out).unwrap();
            }
            reader.finish().unwrap();
            assert_eq!(out.finish(), want, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn merged_parts_equal_one_read() {
        for split in 0..=ROWS.len() {
            let mut a = PurchaseDays::default();
            let mut b = PurchaseDays::default();
            for (i, (id, day, amount, cost, n)) in ROWS.iter().enumerate() {
                let part = if i < split { &mut a } else { &mut b };
                part.push(id, *day, *amount, *cost, *n);
            }
            a.merge(b);
            let (ids, mut purchases) = a.finish();
            let (want_ids, mut want) = direct(&ROWS);
            assert_eq!(ids, want_ids);
            let key = |p: &Purchase| (p.customer, p.day, p.amount_nanos, p.cost_nanos);
            purchases.sort_by_key(key);
            want.sort_by_key(key);
            assert_eq!(purchases, want, "split at {split}");
        }
    }

    #[test]
    fn truncated_or_malformed_streams_are_errors() {
        let bytes = copy_bytes(&ROWS);
        let (mut reader, mut out) = (CopyReader::default(), PurchaseDays::default());
        reader.feed(&bytes[..bytes.len() - 2], &mut out).unwrap();
        assert!(reader.finish().is_err(), "no trailer");
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        let mut reader = CopyReader::default();
        assert!(reader.feed(&wrong, &mut out).is_err(), "bad signature");
        let mut null = copy_bytes(&[("a", 1, 1, 1, 1)]);
        let day_len = SIGNATURE.len() + 8 + 3 + 2 + 4 + 1;
        null[day_len..day_len + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let mut reader = CopyReader::default();
        assert!(reader.feed(&null, &mut out).is_err(), "NULL day");
    }
}
