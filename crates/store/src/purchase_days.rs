//! Reading scoring's read model of purchase days (tens of millions of rows
//! for a full recompute) into the form the models take ([`PurchaseDays`]),
//! or, for the cohort and churn reports, only each customer's days
//! ([`CustomerDays`]).
//!
//! Any backend fills them row by row. On PostgreSQL a
//! full read instead streams the table with binary `COPY`, split in two by
//! block range and read over two connections at once, both importing the
//! snapshot of the caller's transaction (`pg_export_snapshot`), so the
//! result is exactly what that transaction sees. Binary COPY hands over
//! each row as a few length-prefixed fields: no per-row result metadata,
//! no integer formatting, and no allocation except for customers not seen
//! before.

use std::collections::HashMap;

use patron_domain::{ApiError, models::summary::Purchase};
use sea_orm::{ConnectionTrait, DbBackend, Statement, sqlx};

use crate::{
    copy_out::{self, CopyRows, copy_out},
    db_error,
};

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
const COLUMNS: &str = "customer_id, day, amount_nanos, cost_nanos, transactions";

/// What one half of a full read fills (see [`read_all_postgres`]).
pub(crate) trait Half: CopyRows + Send + 'static {
    /// The read model's columns it takes.
    const COLUMNS: &'static str;
    /// Room for about `rows` rows, so a large read does not grow (and copy,
    /// and fault in) its buffers again and again.
    fn with_capacity(rows: usize) -> Self;
    /// Adds the other half's rows (a customer may have rows in both).
    fn merge(&mut self, other: Self);
}

impl Half for PurchaseDays {
    const COLUMNS: &'static str = COLUMNS;

    fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::new(),
            index: HashMap::default(),
            purchases: Vec::with_capacity(rows),
        }
    }

    fn merge(&mut self, other: Self) {
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
}

/// Every purchase day, read with binary COPY over two connections that see
/// the snapshot of `txn` (a repeatable-read transaction on PostgreSQL).
pub(crate) async fn read_all_postgres<C: ConnectionTrait, R: Half>(
    txn: &C,
    pool: &sqlx::PgPool,
) -> Result<R, ApiError> {
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
        tokio::spawn(async move {
            let copy = format!(
                "COPY (SELECT {} FROM {TABLE} WHERE {condition}) TO STDOUT (FORMAT binary)",
                R::COLUMNS
            );
            copy_out(&pool, Some(&snapshot), &copy, R::with_capacity(reserve)).await
        })
    };
    // The first part takes the second in (see `merge`): room for both.
    let first = part(format!("ctid < '({middle},0)'::tid"), pages);
    let second = part(format!("ctid >= '({middle},0)'::tid"), pages - middle);
    let joined = |r: Result<Result<R, ApiError>, tokio::task::JoinError>| {
        r.map_err(|e| ApiError::internal(format!("reading purchase days: {e}")))?
    };
    let (a, b) = tokio::join!(first, second);
    let (mut all, b) = (joined(a)?, joined(b)?);
    all.merge(b);
    Ok(all)
}

/// Each customer's purchase days (one per read-model row, customers in no
/// particular order), for population reports that need nothing else: in
/// one flat array grouped by customer, without the customer ids, so a
/// million customers with ten million days take about 45 MB.
#[derive(Debug, Default, PartialEq)]
pub struct CustomerDays {
    /// Customer k's days are `days[starts[k]..starts[k + 1]]`.
    starts: Vec<u32>,
    days: Vec<i32>,
}

impl CustomerDays {
    /// Each customer's days.
    pub fn customers(&self) -> impl Iterator<Item = &[i32]> + Clone {
        self.starts
            .windows(2)
            .map(|w| &self.days[w[0] as usize..w[1] as usize])
    }
}

/// [`CustomerDays`] as rows come in: customers numbered by id, one
/// (customer, day) pair per row.
#[derive(Default)]
pub(crate) struct DayRows {
    /// Only the index: the report needs no id back.
    index: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    rows: Vec<(u32, i32)>,
}

impl DayRows {
    pub(crate) fn push(&mut self, id: &str, day: i32) {
        let next = self.index.len() as u32;
        let customer = match self.index.get(id) {
            Some(c) => *c,
            None => {
                self.index.insert(id.into(), next);
                next
            }
        };
        self.rows.push((customer, day));
    }

    /// Grouped by customer (a counting sort).
    pub(crate) fn finish(self) -> CustomerDays {
        let mut starts = vec![0u32; self.index.len() + 1];
        for &(c, _) in &self.rows {
            starts[c as usize + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut next = starts.clone();
        let mut days = vec![0i32; self.rows.len()];
        for (c, day) in self.rows {
            days[next[c as usize] as usize] = day;
            next[c as usize] += 1;
        }
        CustomerDays { starts, days }
    }
}

impl CopyRows for DayRows {
    const FIELDS: usize = 2;

    fn row(&mut self, f: &[&[u8]]) -> Result<(), ApiError> {
        self.push(copy_out::text(f[0])?, copy_out::int4(f[1])?);
        Ok(())
    }
}

impl Half for DayRows {
    const COLUMNS: &'static str = "customer_id, day";

    fn with_capacity(rows: usize) -> Self {
        Self {
            index: HashMap::default(),
            rows: Vec::with_capacity(rows),
        }
    }

    fn merge(&mut self, other: Self) {
        let mut renumber = vec![0u32; other.index.len()];
        for (id, c) in other.index {
            let next = self.index.len() as u32;
            renumber[c as usize] = *self.index.entry(id).or_insert(next);
        }
        self.rows.extend(
            other
                .rows
                .into_iter()
                .map(|(c, day)| (renumber[c as usize], day)),
        );
    }
}

impl CopyRows for PurchaseDays {
    const FIELDS: usize = 5;

    fn row(&mut self, f: &[&[u8]]) -> Result<(), ApiError> {
        self.push(
            copy_out::text(f[0])?,
            copy_out::int4(f[1])?,
            copy_out::int8(f[2])?,
            copy_out::int8(f[3])?,
            copy_out::int4(f[4])?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy_out::{CopyReader, SIGNATURE};

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
    fn day_rows_group_each_customers_days_however_split() {
        for split in 0..=ROWS.len() {
            let (mut a, mut b) = (DayRows::default(), DayRows::default());
            for (i, (id, day, ..)) in ROWS.iter().enumerate() {
                let part = if i < split { &mut a } else { &mut b };
                part.push(id, *day);
            }
            a.merge(b);
            let mut got: Vec<Vec<i32>> = a
                .finish()
                .customers()
                .map(|days| {
                    let mut days = days.to_vec();
                    days.sort_unstable();
                    days
                })
                .collect();
            got.sort_unstable();
            assert_eq!(
                got,
                [vec![-3], vec![0], vec![1], vec![19_000, 19_001]],
                "split at {split}"
            );
        }
        assert_eq!(DayRows::default().finish().customers().count(), 0);
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
