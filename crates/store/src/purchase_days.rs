//! Scoring's read model of purchases: one row per customer,
//! `scoring_customer_histories (customer_id, days)`, where `days` packs the
//! customer's purchase days (see [`PurchaseDay`]) in day order.
//!
//! One row per customer, not per day: a full recompute reads every
//! purchase of every customer (tens of millions of days), and PostgreSQL
//! spends about a microsecond on each row it sends whatever its width, so
//! the row count bounds the read (1M customers with 10M days: 5.7 s as day
//! rows, 1.1 s as customer rows, by `psql \copy ... (format binary)` on
//! synthetic tables). The feed consumer pays for it with a read-modify-write
//! of each buyer's row ([`add_days`]), and online scoring reads one row per
//! customer instead of one per day.
//!
//! The full reads fill the form the models take ([`PurchaseDays`]) or, for
//! the cohort and churn reports, only each customer's days
//! ([`CustomerDays`]), row by row on any backend; on PostgreSQL they stream
//! the table with binary `COPY`, split in two by block range and read over
//! two connections at once, both importing the snapshot of the caller's
//! transaction (`pg_export_snapshot`), so the result is exactly what that
//! transaction sees.

use std::collections::HashMap;

use patron_domain::{
    ApiError,
    models::summary::{CustomerSummary, DayTotals, Purchase, summarize_days},
};
use sea_orm::{
    ConnectionTrait, DbBackend, Statement,
    sea_query::{Expr, ExprTrait, Query},
    sqlx,
};

use crate::copy_out::{self, CopyRows};

pub(crate) const TABLE: &str = "scoring_customer_histories";

/// The purchases of one customer on one day (UTC), summed.
///
/// Packed as 24 bytes, big-endian: `day` (4), `amount_nanos` (8),
/// `cost_nanos` (8), `transactions` (4). Big-endian because that is what
/// PostgreSQL's `int4send` / `int8send` write, so SQL can pack and unpack
/// them too (the migration that introduced the table packs the old day
/// rows that way); NumPy reads them as
/// `dtype=[("day", ">i4"), ("amount_nanos", ">i8"), ("cost_nanos", ">i8"), ("transactions", ">i4")]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PurchaseDay {
    pub day: i32,
    pub amount_nanos: i64,
    pub cost_nanos: i64,
    pub transactions: i32,
}

impl PurchaseDay {
    pub(crate) const BYTES: usize = 24;

    fn pack(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.day.to_be_bytes());
        out.extend_from_slice(&self.amount_nanos.to_be_bytes());
        out.extend_from_slice(&self.cost_nanos.to_be_bytes());
        out.extend_from_slice(&self.transactions.to_be_bytes());
    }

    fn unpack(b: &[u8]) -> Self {
        let int4 = |at: usize| i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let int8 = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            i64::from_be_bytes(x)
        };
        Self {
            day: int4(0),
            amount_nanos: int8(4),
            cost_nanos: int8(12),
            transactions: int4(20),
        }
    }
}

/// The days packed in `packed`, in the order stored (day order).
pub(crate) fn unpack(packed: &[u8]) -> Result<impl Iterator<Item = PurchaseDay> + '_, ApiError> {
    if !packed.len().is_multiple_of(PurchaseDay::BYTES) {
        return Err(ApiError::internal(format!(
            "a purchase history of {} bytes, not a multiple of {}",
            packed.len(),
            PurchaseDay::BYTES
        )));
    }
    Ok(packed
        .chunks_exact(PurchaseDay::BYTES)
        .map(PurchaseDay::unpack))
}

/// `packed` (a stored history, or empty) with `new` added: a day already
/// there sums its amounts and transactions, other days are inserted in
/// day order. `new` must be in day order, each day once.
pub(crate) fn add_days(packed: &[u8], new: &[PurchaseDay]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(packed.len() + new.len() * PurchaseDay::BYTES);
    let mut old = unpack(packed)?.peekable();
    let mut new = new.iter().copied().peekable();
    loop {
        let next = match (old.peek(), new.peek()) {
            (Some(o), Some(n)) if o.day == n.day => {
                let (o, n) = (old.next(), new.next());
                let (o, n) = (o.unwrap_or_default(), n.unwrap_or_default());
                PurchaseDay {
                    day: o.day,
                    amount_nanos: o.amount_nanos.saturating_add(n.amount_nanos),
                    cost_nanos: o.cost_nanos.saturating_add(n.cost_nanos),
                    transactions: o.transactions.saturating_add(n.transactions),
                }
            }
            (Some(o), Some(n)) if o.day < n.day => old.next().unwrap_or_default(),
            (Some(_), None) => old.next().unwrap_or_default(),
            (_, Some(_)) => new.next().unwrap_or_default(),
            (None, None) => break,
        };
        next.pack(&mut out);
    }
    Ok(out)
}

/// One row of the table, as a full read hands it over. A read starts from
/// an empty one, which says how to take the rows.
pub(crate) trait Histories: Send + 'static {
    /// Another empty one taking rows the same way, with room for about
    /// `bytes` of packed days in about `rows` rows (customers), so a large
    /// read does not grow (and copy, and fault in) its buffers again and
    /// again.
    fn with_room(&self, bytes: usize, rows: usize) -> Self;
    /// Takes one customer's row.
    fn push(&mut self, id: &str, packed: &[u8]) -> Result<(), ApiError>;
    /// Appends the other half's customers (each row is another customer).
    fn merge(&mut self, other: Self);
}

/// A binary COPY of `(customer_id, days)` rows fills any of them.
impl<H: Histories> CopyRows for H {
    const FIELDS: usize = 2;

    fn row(&mut self, f: &[&[u8]]) -> Result<(), ApiError> {
        self.push(copy_out::text(f[0])?, f[1])
    }
}

/// Customers numbered in order of reading, and one [`Purchase`] per
/// transaction: a [`PurchaseDay`] becomes one purchase carrying the day's
/// amounts plus one empty purchase per further transaction, so occasions,
/// sums and transaction counts (RFM frequency) all stay exact.
#[derive(Default)]
pub(crate) struct PurchaseDays {
    ids: Vec<String>,
    purchases: Vec<Purchase>,
}

impl PurchaseDays {
    /// The customer ids and purchases, customers numbered in id order
    /// whatever order the rows came in: the fits sum over customers in that
    /// order, and must not depend on where the database stored the rows.
    pub(crate) fn finish(self) -> (Vec<String>, Vec<Purchase>) {
        let PurchaseDays { ids, mut purchases } = self;
        let (ids, renumber) = in_id_order(ids);
        for p in &mut purchases {
            p.customer = renumber[p.customer as usize];
        }
        (ids, purchases)
    }
}

/// `ids` (customers numbered in order of reading) in id order, and each
/// customer's new number by its old one.
fn in_id_order(ids: Vec<String>) -> (Vec<String>, Vec<u32>) {
    let (ids, order) = crate::id_order::into_id_order(ids);
    let mut renumber = vec![0u32; ids.len()];
    for (new, old) in order.iter().enumerate() {
        renumber[*old as usize] = new as u32;
    }
    (ids, renumber)
}

impl Histories for PurchaseDays {
    fn with_room(&self, bytes: usize, rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            // Transactions beyond the first of a day add a purchase each;
            // the table's size (row headers, ids) leaves room for them.
            purchases: Vec::with_capacity(bytes / PurchaseDay::BYTES),
        }
    }

    fn push(&mut self, id: &str, packed: &[u8]) -> Result<(), ApiError> {
        let customer = self.ids.len() as u32;
        for d in unpack(packed)? {
            self.purchases.push(Purchase {
                customer,
                day: d.day,
                amount_nanos: d.amount_nanos,
                cost_nanos: d.cost_nanos,
            });
            for _ in 1..d.transactions {
                self.purchases.push(Purchase {
                    customer,
                    day: d.day,
                    amount_nanos: 0,
                    cost_nanos: 0,
                });
            }
        }
        self.ids.push(id.to_owned());
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        let offset = self.ids.len() as u32;
        self.ids.extend(other.ids);
        self.purchases
            .extend(other.purchases.into_iter().map(|p| Purchase {
                customer: p.customer + offset,
                ..p
            }));
    }
}

/// Each customer's purchase days (customers in no particular order), for
/// population reports that need nothing else: in one flat array grouped by
/// customer, without the customer ids, so a million customers with ten
/// million days take about 45 MB.
#[derive(Debug, Default, PartialEq)]
pub struct CustomerDays {
    /// Customer k's days are `days[starts[k]..starts[k + 1]]` (empty, or
    /// one more than there are customers).
    starts: Vec<u32>,
    days: Vec<i32>,
}

impl CustomerDays {
    /// Each customer's days, in day order.
    pub fn customers(&self) -> impl Iterator<Item = &[i32]> + Clone {
        self.starts
            .windows(2)
            .map(|w| &self.days[w[0] as usize..w[1] as usize])
    }
}

impl Histories for CustomerDays {
    fn with_room(&self, bytes: usize, rows: usize) -> Self {
        Self {
            starts: Vec::with_capacity(rows + 1),
            days: Vec::with_capacity(bytes / PurchaseDay::BYTES),
        }
    }

    fn push(&mut self, _id: &str, packed: &[u8]) -> Result<(), ApiError> {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.days.extend(unpack(packed)?.map(|d| d.day));
        self.starts.push(self.days.len() as u32);
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        if self.starts.is_empty() {
            *self = other;
            return;
        }
        let offset = self.days.len() as u32;
        self.days.extend(other.days);
        self.starts
            .extend(other.starts.iter().skip(1).map(|s| s + offset));
    }
}

/// Each customer's [`CustomerSummary`] as of a day, made as its row is
/// read: what scoring scores. Without a purchase per transaction, and so
/// without the ten million of them a full read of ten million purchase
/// days held before (240 MB, and as much again to group them by customer).
pub(crate) struct Summaries {
    as_of_day: i32,
    /// Customers numbered in order of reading (see [`Self::finish`]).
    ids: Vec<String>,
    /// Those with a purchase up to `as_of_day`, in order of reading.
    summaries: Vec<CustomerSummary>,
}

impl Summaries {
    pub(crate) fn as_of(as_of_day: i32) -> Self {
        Self {
            as_of_day,
            ids: Vec::new(),
            summaries: Vec::new(),
        }
    }

    /// The customer ids and summaries, customers numbered in id order
    /// whatever order the rows came in, summaries in customer order (see
    /// [`PurchaseDays::finish`]).
    pub(crate) fn finish(self) -> (Vec<String>, Vec<CustomerSummary>) {
        let Summaries {
            ids, mut summaries, ..
        } = self;
        let (ids, renumber) = in_id_order(ids);
        for s in &mut summaries {
            s.customer = renumber[s.customer as usize];
        }
        // In place: a second array of a million summaries (80 MB) would
        // raise the recompute's peak memory.
        summaries.sort_unstable_by_key(|s| s.customer);
        (ids, summaries)
    }
}

impl Histories for Summaries {
    fn with_room(&self, _bytes: usize, rows: usize) -> Self {
        Self {
            as_of_day: self.as_of_day,
            ids: Vec::with_capacity(rows),
            // Nearly every row is a buyer's.
            summaries: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, id: &str, packed: &[u8]) -> Result<(), ApiError> {
        let customer = self.ids.len() as u32;
        let days = unpack(packed)?.map(|d| DayTotals {
            day: d.day,
            amount_nanos: d.amount_nanos,
            cost_nanos: d.cost_nanos,
            // As [`PurchaseDays`] takes it: a stored day is at least one
            // transaction.
            transactions: Ord::max(d.transactions, 1).unsigned_abs(),
        });
        self.summaries
            .extend(summarize_days(customer, days, self.as_of_day));
        self.ids.push(id.to_owned());
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        let offset = self.ids.len() as u32;
        self.ids.extend(other.ids);
        self.summaries
            .extend(other.summaries.into_iter().map(|s| CustomerSummary {
                customer: s.customer + offset,
                ..s
            }));
    }
}

/// Exports the snapshot of `txn` (a repeatable-read transaction on
/// PostgreSQL), for reads on other connections to see exactly what it sees
/// (see [`copy_out`]).
pub(crate) async fn export_snapshot<C: ConnectionTrait>(txn: &C) -> Result<String, ApiError> {
    txn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT pg_export_snapshot() AS s",
    ))
    .await
    .map_err(crate::db_error)?
    .ok_or_else(|| ApiError::internal("pg_export_snapshot returned no row"))?
    .try_get("", "s")
    .map_err(crate::db_error)
}

/// Every customer's history, read into `empty` with binary COPY over two
/// connections that import `snapshot` (see [`export_snapshot`]) of `txn`.
pub(crate) async fn read_all_postgres<C: ConnectionTrait, R: Histories>(
    txn: &C,
    pool: &sqlx::PgPool,
    snapshot: &str,
    empty: R,
) -> Result<R, ApiError> {
    let (mut all, second) = copy_out::copy_out_in_halves(
        txn,
        pool,
        snapshot,
        TABLE,
        "customer_id, days",
        |bytes, rows| empty.with_room(bytes, rows),
    )
    .await?;
    all.merge(second);
    Ok(all)
}

/// Every customer's history (or those of `only`), row by row, into
/// `out`: the full read on SQLite, and the few customers online scoring
/// rescores.
pub(crate) async fn read_rows<C, R>(
    db: &C,
    only: Option<&[String]>,
    mut out: R,
) -> Result<R, ApiError>
where
    C: ConnectionTrait + sea_orm::StreamTrait,
    R: Histories,
{
    use futures::TryStreamExt;
    let mut q = Query::select();
    q.columns(["customer_id", "days"]).from(TABLE);
    if let Some(ids) = only {
        q.and_where(Expr::col("customer_id").is_in(crate::query::padded(ids)));
    }
    let rows = db.stream(&q).await.map_err(crate::db_error)?;
    let mut rows = std::pin::pin!(rows);
    while let Some(r) = rows.try_next().await.map_err(crate::db_error)? {
        let id: String = r.try_get_by_index(0).map_err(crate::db_error)?;
        let days: Vec<u8> = r.try_get_by_index(1).map_err(crate::db_error)?;
        out.push(&id, &days)?;
    }
    Ok(out)
}

/// Adds a feed batch's purchase days (per customer, in day order, each day
/// once) to the customers' histories, in the caller's transaction: each
/// buyer's row is read, merged ([`add_days`]) and written back. The caller
/// must hold the feed cursor's row first (see `ScoringStore::apply`), so no
/// other replica merges into the same rows meanwhile.
pub(crate) async fn add_to_histories<C: ConnectionTrait>(
    txn: &C,
    mut days: HashMap<&str, Vec<PurchaseDay>>,
) -> Result<(), ApiError> {
    // The ids borrow from the caller's batch, not from `days`.
    let ids: Vec<&str> = days.keys().copied().collect();
    for chunk in ids.chunks(1_000) {
        let stored = txn
            .query_all(
                Query::select()
                    .columns(["customer_id", "days"])
                    .from(TABLE)
                    .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk))),
            )
            .await
            .map_err(crate::db_error)?;
        let mut stored: HashMap<String, Vec<u8>> = stored
            .into_iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(crate::db_error)?;
        let mut rows = Vec::with_capacity(chunk.len());
        for &id in chunk {
            let new = days.remove(id).unwrap_or_default();
            let old = stored.remove(id).unwrap_or_default();
            rows.push(vec![id.into(), add_days(&old, &new)?.into()]);
        }
        crate::bulk::insert(
            txn,
            TABLE,
            &["customer_id", "days"],
            rows,
            crate::bulk::Conflict::Update {
                key: &["customer_id"],
                columns: &["days"],
                how: crate::bulk::Update::Replace,
            },
            None,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::copy_out::{CopyReader, SIGNATURE};

    fn day(day: i32, amount_nanos: i64, cost_nanos: i64, transactions: i32) -> PurchaseDay {
        PurchaseDay {
            day,
            amount_nanos,
            cost_nanos,
            transactions,
        }
    }

    fn pack(days: &[PurchaseDay]) -> Vec<u8> {
        add_days(&[], days).unwrap()
    }

    /// A binary COPY of `(customer_id, days)` rows, as PostgreSQL writes it.
    fn copy_bytes(rows: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend(0u32.to_be_bytes()); // flags
        b.extend(3u32.to_be_bytes()); // header extension, skipped
        b.extend([7, 7, 7]);
        for (id, days) in rows {
            b.extend(2i16.to_be_bytes());
            for field in [id.as_bytes(), days] {
                b.extend((field.len() as i32).to_be_bytes());
                b.extend(field);
            }
        }
        b.extend((-1i16).to_be_bytes());
        b
    }

    fn rows() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (
                "b",
                pack(&[day(19_000, 5_000_000_000, 1, 1), day(19_001, 0, 0, 2)]),
            ),
            ("a", pack(&[day(-3, -7, i64::MIN, 3)])),
            ("ü-ñ", pack(&[day(0, i64::MAX, 0, 1)])),
            ("", pack(&[day(1, 1, 1, 1)])),
        ]
    }

    fn direct<R: Histories>(rows: &[(&str, Vec<u8>)], mut out: R) -> R {
        for (id, days) in rows {
            out.push(id, days).unwrap();
        }
        out
    }

    #[test]
    fn the_packing_is_big_endian_fixed_width_as_sql_writes_it() {
        // What `int4send(19000) || int8send(-7) || int8send(1) || int4send(2)`
        // returns in PostgreSQL (the migration packs the old rows so).
        let want: Vec<u8> = [
            &19_000i32.to_be_bytes()[..],
            &(-7i64).to_be_bytes(),
            &1i64.to_be_bytes(),
            &2i32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(pack(&[day(19_000, -7, 1, 2)]), want);
        assert_eq!(
            unpack(&want).unwrap().collect::<Vec<_>>(),
            [day(19_000, -7, 1, 2)]
        );
        assert!(unpack(&want[..23]).is_err(), "a partial day");
    }

    #[test]
    fn purchases_expand_each_days_transactions() {
        let (ids, purchases) = direct(&rows(), PurchaseDays::default()).finish();
        assert_eq!(ids, ["", "a", "b", "ü-ñ"]);
        let got: Vec<(u32, i32, i64, i64)> = purchases
            .iter()
            .map(|p| (p.customer, p.day, p.amount_nanos, p.cost_nanos))
            .collect();
        assert_eq!(
            got,
            [
                (2, 19_000, 5_000_000_000, 1),
                (2, 19_001, 0, 0),
                (2, 19_001, 0, 0),
                (1, -3, -7, i64::MIN),
                (1, -3, 0, 0),
                (1, -3, 0, 0),
                (3, 0, i64::MAX, 0),
                (0, 1, 1, 1),
            ]
        );
    }

    #[test]
    fn rows_split_anywhere_across_chunks_read_the_same() {
        let rows = rows();
        let bytes = copy_bytes(&rows);
        let want = direct(&rows, PurchaseDays::default()).finish();
        let want_days = direct(&rows, CustomerDays::default());
        for chunk in 1..=bytes.len() {
            let (mut reader, mut out) = (CopyReader::default(), PurchaseDays::default());
            let (mut days_reader, mut days) = (CopyReader::default(), CustomerDays::default());
            for part in bytes.chunks(chunk) {
                reader.feed(part, &mut out).unwrap();
                days_reader.feed(part, &mut days).unwrap();
            }
            reader.finish().unwrap();
            days_reader.finish().unwrap();
            assert_eq!(out.finish(), want, "chunks of {chunk} bytes");
            assert_eq!(days, want_days, "chunks of {chunk} bytes");
        }
    }

    /// A recompute's read summarizes each row as it comes: the same
    /// summaries as reading every purchase and summarizing them after, for
    /// any scoring day and however the read is split in two.
    #[test]
    fn summaries_as_read_equal_the_summaries_of_the_purchases() {
        let rows = rows();
        let (ids, purchases) = direct(&rows, PurchaseDays::default()).finish();
        for as_of_day in [-4, -3, 0, 1, 19_000, 19_001, 20_000] {
            let want = patron_domain::models::summary::summarize(ids.len(), &purchases, as_of_day);
            for split in 0..=rows.len() {
                let mut a = direct(&rows[..split], Summaries::as_of(as_of_day));
                a.merge(direct(&rows[split..], Summaries::as_of(as_of_day)));
                assert_eq!(
                    a.finish(),
                    (ids.clone(), want.clone()),
                    "as of {as_of_day}, split at {split}"
                );
            }
        }
    }

    #[test]
    fn merged_halves_equal_one_read() {
        let rows = rows();
        for split in 0..=rows.len() {
            let mut a = direct(&rows[..split], PurchaseDays::default());
            a.merge(direct(&rows[split..], PurchaseDays::default()));
            assert_eq!(
                a.finish(),
                direct(&rows, PurchaseDays::default()).finish(),
                "split at {split}"
            );
            let mut a = direct(&rows[..split], CustomerDays::default());
            a.merge(direct(&rows[split..], CustomerDays::default()));
            let got: Vec<Vec<i32>> = a.customers().map(<[i32]>::to_vec).collect();
            assert_eq!(
                got,
                [vec![19_000, 19_001], vec![-3], vec![0], vec![1]],
                "split at {split}"
            );
        }
        assert_eq!(CustomerDays::default().customers().count(), 0);
    }

    #[test]
    fn truncated_or_malformed_streams_are_errors() {
        let bytes = copy_bytes(&rows());
        let (mut reader, mut out) = (CopyReader::default(), PurchaseDays::default());
        reader.feed(&bytes[..bytes.len() - 2], &mut out).unwrap();
        assert!(reader.finish().is_err(), "no trailer");
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        let mut reader = CopyReader::default();
        assert!(reader.feed(&wrong, &mut out).is_err(), "bad signature");
        let mut null = copy_bytes(&[("a", pack(&[day(1, 1, 1, 1)]))]);
        let days_len = SIGNATURE.len() + 8 + 3 + 2 + 4 + 1;
        null[days_len..days_len + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let mut reader = CopyReader::default();
        assert!(reader.feed(&null, &mut out).is_err(), "NULL days");
        let partial = copy_bytes(&[("a", vec![0; 25])]);
        let mut reader = CopyReader::default();
        assert!(reader.feed(&partial, &mut out).is_err(), "a partial day");
    }

    fn batches() -> impl Strategy<Value = Vec<Vec<(i32, i64, i64, i32)>>> {
        // Few distinct days, so batches often hit days already stored.
        let purchase = (-5..40i32, -1_000..1_000_000i64, 0..1_000i64, 1..4i32);
        proptest::collection::vec(proptest::collection::vec(purchase, 0..12), 0..8)
    }

    proptest! {
        /// However a customer's purchases arrive in feed batches, the packed
        /// history holds each day once, in day order, with that day's sums.
        #[test]
        fn histories_hold_each_days_sums_in_day_order(batches in batches()) {
            let mut packed = Vec::new();
            let mut want: BTreeMap<i32, (i64, i64, i32)> = BTreeMap::new();
            for batch in batches {
                // What `ScoringStore::apply` hands over: one entry per day.
                let mut days: BTreeMap<i32, (i64, i64, i32)> = BTreeMap::new();
                for (d, amount, cost, n) in batch {
                    for sums in [days.entry(d).or_default(), want.entry(d).or_default()] {
                        sums.0 += amount;
                        sums.1 += cost;
                        sums.2 += n;
                    }
                }
                let new: Vec<PurchaseDay> =
                    days.into_iter().map(|(d, (a, c, n))| day(d, a, c, n)).collect();
                packed = add_days(&packed, &new).unwrap();
            }
            let got: Vec<PurchaseDay> = unpack(&packed).unwrap().collect();
            let want: Vec<PurchaseDay> =
                want.into_iter().map(|(d, (a, c, n))| day(d, a, c, n)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
