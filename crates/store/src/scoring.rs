//! The scoring service's tables: its read model of customers and purchase
//! days (fed by the profile change feed), its feed cursor, and fitted models.

use std::collections::HashMap;

use bytes::Bytes;

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError,
    models::summary::{CustomerSummary, Purchase},
    money::Currency,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use sea_orm::sqlx::{
    self, Postgres,
    pool::PoolConnection,
    postgres::{PgCopyIn, PgPoolCopyExt},
};

pub use crate::product_groups::ProductGroup;
pub use crate::purchase_days::CustomerDays;
use crate::{
    Storage, begin_write, db_error,
    purchase_days::{PurchaseDay, PurchaseDays, Summaries},
};

/// One stored score: the customer, the labels distributions count, and the
/// encoded score.
#[derive(Debug, Clone)]
pub struct ScoreRow {
    pub customer_id: String,
    /// The labels, by [`DISTRIBUTION_COLUMNS`], as stored: each the code of a
    /// name in [`SCORE_LABELS`] (its position in that column's list). Two
    /// bytes each instead of the name: a recompute writes a million rows.
    pub labels: [i16; 5],
    /// A recompute's scores share a few buffers (see `scoring`'s
    /// `score_rows`), hence `Bytes`.
    pub score: Bytes,
}

pub use patron_migrations::SCORE_LABELS;

/// Counts per label of each dimension.
#[derive(Debug, Clone, Default)]
pub struct Distribution {
    pub customers: i64,
    pub computed_at: Option<DateTime<Utc>>,
    /// (dimension column, label name, count)
    pub counts: Vec<(&'static str, &'static str, i64)>,
}

/// The label columns of a stored score, in [`ScoreRow::labels`]' order.
pub const DISTRIBUTION_COLUMNS: [&str; 5] = {
    let mut columns = [""; 5];
    let mut i = 0;
    while i < columns.len() {
        columns[i] = SCORE_LABELS[i].0;
        i += 1;
    }
    columns
};

/// The name of label `code` in the `dimension`th label column ("" for a
/// code no version wrote).
pub fn label_name(dimension: usize, code: i16) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|code| SCORE_LABELS[dimension].1.get(code))
        .copied()
        .unwrap_or("")
}

/// One transaction, on its way to the product rollup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductRow {
    pub day: i32,
    pub region: String,
    pub category: String,
    /// Sales channel ("" when not given).
    pub channel: String,
    pub currency: String,
    pub customer_id: String,
    /// 1 on write.
    pub transactions: i64,
    pub quantity: i64,
    pub amount_nanos: i64,
}

/// What scoring knows of a customer beside purchases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerFacts {
    pub interactions: u32,
    /// Currency of the customer's purchases (the latest seen); none before
    /// the first. Parsed as it is read, once per customer.
    pub currency: Option<Currency>,
    pub latest_nps: Option<i32>,
    /// UTC day the oldest open complaint was filed.
    pub oldest_open_complaint_day: Option<i32>,
    pub complaints: u32,
    /// Erased in profile: the row stays as a tombstone (the purchases stay,
    /// anonymous, in the scores and reports).
    pub erased: bool,
}

/// Customers' [`CustomerFacts`], in id order. A recompute joins a million
/// of them to its customers with purchases, also in id order, by walking
/// both ([`FactsCursor`]): memory is touched in order, where a hash map by
/// id took a cache miss per customer to fill and another to look up (0.3
/// and 0.1 s of a core at a million).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactsById {
    ids: Vec<String>,
    facts: Vec<CustomerFacts>,
}

impl FactsById {
    /// Puts customers read in any order in id order (each id once).
    fn from_unordered(ids: Vec<String>, facts: Vec<CustomerFacts>) -> Self {
        let (ids, order) = crate::id_order::into_id_order(ids);
        Self {
            facts: order.iter().map(|&i| facts[i as usize].clone()).collect(),
            ids,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A customer's facts, by binary search (see [`Self::cursor`] for many).
    pub fn get(&self, id: &str) -> Option<&CustomerFacts> {
        self.cursor().find(id).map(|at| &self.facts[at])
    }

    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The id and facts at `position` (of [`FactsCursor::find`]).
    pub fn at(&self, position: usize) -> (&str, &CustomerFacts) {
        (&self.ids[position], &self.facts[position])
    }

    /// Every customer, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CustomerFacts)> {
        self.ids.iter().map(String::as_str).zip(&self.facts)
    }

    /// Looks up many customers, cheapest in id order.
    pub fn cursor(&self) -> FactsCursor<'_> {
        FactsCursor {
            ids: &self.ids,
            at: 0,
        }
    }

    /// Removes a customer, returning its facts.
    pub fn remove(&mut self, id: &str) -> Option<CustomerFacts> {
        let at = self.cursor().find(id)?;
        self.ids.remove(at);
        Some(self.facts.remove(at))
    }
}

impl FromIterator<(String, CustomerFacts)> for FactsById {
    fn from_iter<I: IntoIterator<Item = (String, CustomerFacts)>>(customers: I) -> Self {
        let (ids, facts) = customers.into_iter().unzip();
        Self::from_unordered(ids, facts)
    }
}

/// Looks up ids in a [`FactsById`]: each search starts where the last one
/// ended and gallops forward, so ids asked for in id order cost about a
/// step each; an id before the last one is found by a binary search.
pub struct FactsCursor<'a> {
    ids: &'a [String],
    /// Every id before it is below the last id found.
    at: usize,
}

impl FactsCursor<'_> {
    /// The position of `id` (see [`FactsById::at`]), if it is there.
    pub fn find(&mut self, id: &str) -> Option<usize> {
        let ids = self.ids;
        let below = |x: &String| x.as_str() < id;
        let (mut low, high) = if self.at > 0 && !below(&ids[self.at - 1]) {
            (0, self.at)
        } else {
            // Probes at `at`, then 2, 4, 8, ... further, until one is not
            // below `id`: the place is between the last two probes.
            let (mut low, mut step) = (self.at, 1);
            let high = loop {
                let probe = low + step - 1;
                if probe >= ids.len() {
                    break ids.len();
                }
                if !below(&ids[probe]) {
                    break probe + 1;
                }
                low = probe + 1;
                step *= 2;
            };
            (low, high)
        };
        low += ids[low..high].partition_point(below);
        let found = low < ids.len() && ids[low] == id;
        self.at = low + usize::from(found);
        found.then_some(low)
    }
}

/// A customer's feedback summary as scoring stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FeedbackSignals {
    pub latest_nps: Option<i32>,
    pub oldest_open_complaint_day: Option<i32>,
    pub complaints: i32,
}

/// The stored columns of a score, key first, `revision` last (see
/// [`COPIED_COLUMNS`]).
const SCORE_COLUMNS: [&str; 10] = [
    "customer_id",
    "computed_at",
    "segment",
    "value_tier",
    "value_quadrant",
    "churn_risk",
    "lifecycle_stage",
    "score",
    "data_seq",
    "revision",
];

/// The prefix of the table a full recompute fills before it replaces
/// `scoring_scores` (one at a time: see [`REPLACEMENT_LOCK`]).
const NEXT_SCORES: &str = "scoring_scores_next";

/// What a replacement's COPY fills: every score column but `revision`,
/// which the new table's default gives every row (the revision the
/// replacement reserved, see [`REVISIONS_RESERVED`]).
const COPIED_COLUMNS: &[&str] = SCORE_COLUMNS.as_slice().split_at(SCORE_COLUMNS.len() - 1).0;

/// How far ahead of the score counter a replacement reserves its
/// revision when it begins. Its new rows carry that revision from the
/// COPY on, so the revision index is built before other score writes
/// must wait; at the swap the counter skips ahead to it. Each online
/// score write takes one revision, so the reservation holds unless 16
/// million of them commit during one recompute; if they do, the swap
/// gives the rows the revision it takes instead (one UPDATE of the table:
/// slower, never wrong).
const REVISIONS_RESERVED: i64 = 1 << 24;

/// The transaction-scoped advisory lock a replacement holds from start to
/// end, so replacements run one at a time (in every replica): the tables a
/// replacement finds left over are then orphans of one that died.
/// ("patron" in ASCII, then 1.)
const REPLACEMENT_LOCK: i64 = 0x7061_7472_6f6e_0001;

/// What every score of one write shares.
struct ScoreStamp {
    computed_at: DateTime<Utc>,
    revision: i64,
    data_seq: i64,
}

impl ScoreStamp {
    fn rows(&self, scores: &[ScoreRow]) -> Vec<Vec<sea_orm::Value>> {
        scores
            .iter()
            .map(|r| {
                let mut row = Vec::with_capacity(SCORE_COLUMNS.len());
                row.extend([r.customer_id.as_str().into(), self.computed_at.into()]);
                row.extend(r.labels.map(sea_orm::Value::from));
                row.extend([
                    r.score.to_vec().into(),
                    self.data_seq.into(),
                    self.revision.into(),
                ]);
                row
            })
            .collect()
    }
}

/// A full recompute's scores on their way into a fresh table; see
/// [`ScoringStore::begin_replacement`]. Dropped without [`finish`](Self::finish),
/// the transaction rolls back and nothing changes (the half-filled table is
/// dropped by the next replacement).
pub struct ScoreReplacement {
    txn: sea_orm::DatabaseTransaction,
    copy: PgCopyIn<PoolConnection<Postgres>>,
    pool: sqlx::PgPool,
    table: String,
    /// The revision every new row carries (see [`REVISIONS_RESERVED`]).
    reserved: i64,
    computed_at: DateTime<Utc>,
    data_seq: i64,
    read: RecomputeRead,
}

/// What a full recompute read, which bounds what its replacement must look
/// at in the old table: the rows up to `revision` are of customers it read,
/// and it scored all of them but `unscored`.
#[derive(Debug, Clone, Default)]
pub struct RecomputeRead {
    /// The score counter in the recompute's snapshot ([`ScoringSnapshot`]'s
    /// `score_revision`). A row saved up to it was visible to the snapshot,
    /// so it is of data the recompute read too: the recompute's own score of
    /// that customer replaces it. Rows saved after it are taken over by the
    /// rules of [`ScoreReplacement::prepare`].
    pub revision: i64,
    /// Customers the recompute read and did not score (an erased customer
    /// without purchases): their rows up to `revision` are kept as they are.
    pub unscored: Vec<String>,
}

impl ScoreReplacement {
    /// Adds new scores (each customer once over all calls), in PostgreSQL's
    /// binary COPY format.
    pub async fn write(&mut self, scores: &[ScoreRow]) -> Result<(), ApiError> {
        let mut buf = Vec::with_capacity(scores.len() * 384);
        // Microseconds since 2000-01-01, PostgreSQL's timestamp epoch.
        let at = self.computed_at.timestamp_micros() - 946_684_800_000_000;
        for r in scores {
            buf.extend((COPIED_COLUMNS.len() as i16).to_be_bytes());
            let mut bytes = |b: &[u8]| {
                buf.extend((b.len() as i32).to_be_bytes());
                buf.extend_from_slice(b);
            };
            bytes(r.customer_id.as_bytes());
            bytes(&at.to_be_bytes());
            for label in r.labels {
                bytes(&label.to_be_bytes());
            }
            bytes(&r.score);
            bytes(&self.data_seq.to_be_bytes());
        }
        self.copy.send(buf).await.map_err(sqlx_error)?;
        Ok(())
    }

    /// Indexes the new table, takes over what the recompute must not
    /// replace, swaps it in and commits: [`prepare`](Self::prepare), then
    /// [`PreparedReplacement::swap`]. Returns the customers whose online
    /// score, newer than the recompute's, was kept.
    pub async fn finish(self) -> Result<Vec<String>, ApiError> {
        self.prepare().await?.swap().await
    }

    /// Everything that can be done before other score writes must wait:
    /// ends the COPY, builds the indexes, and collects the rows of the old
    /// table to keep (see [`PreparedReplacement`]) as saved up to now.
    pub async fn prepare(mut self) -> Result<PreparedReplacement, ApiError> {
        let started = std::time::Instant::now();
        self.copy
            .send((-1i16).to_be_bytes().as_slice())
            .await
            .map_err(sqlx_error)?;
        self.copy.finish().await.map_err(sqlx_error)?;
        let next = &self.table;
        let txn = &self.txn;
        let run = |sql: String| async move { txn.execute_unprepared(&sql).await.map_err(db_error) };
        for sql in [
            format!("ALTER TABLE {next} ADD CONSTRAINT {next}_pkey PRIMARY KEY (customer_id)"),
            // "_by_revision" would pass PostgreSQL's 63-byte limit for names.
            format!("CREATE INDEX {next}_rev ON {next} (revision, customer_id)"),
            // Rows inserted later (by the takeover, by online scoring once
            // the table is swapped in) name their revision.
            format!("ALTER TABLE {next} ALTER COLUMN revision SET DEFAULT 0"),
        ] {
            run(sql).await?;
        }
        // The rows to keep, as saved up to `seen`: the first pass of the
        // takeover. It runs before other writes wait; the swap then looks
        // only at rows saved after `seen` (a range of the revision index).
        // Revisions become visible in order, so every row up to `seen` is
        // visible here.
        let seen = crate::cursor::last_revision(txn, "scoring_score_head").await?;
        // A table of this transaction, dropped before it commits (a rollback
        // takes it away too). Not TEMPORARY: that needs the TEMP privilege,
        // which locked-down databases revoke.
        let kept = format!("{next}_kept");
        // Both kinds of row to keep among those saved while the recompute
        // ran (after its read, a range of the old table's revision index):
        // customers it did not score, and later feed positions than it read.
        // `customer_id` is the new table's key, so the join adds no row.
        // Rows up to the read are replaced by the new scores (see
        // `RecomputeRead`): looking at the whole old table for them, a join
        // of a million rows against a million, took 0.6 to 1.4 s of a
        // recompute.
        let old_columns = SCORE_COLUMNS
            .iter()
            .map(|c| format!("o.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        run(format!(
            "CREATE UNLOGGED TABLE {kept} AS \
             SELECT {old_columns} FROM scoring_scores o \
             LEFT JOIN {next} n ON n.customer_id = o.customer_id \
             WHERE o.revision > {read} AND o.revision <= {seen} \
             AND (n.customer_id IS NULL OR o.data_seq > {data_seq})",
            read = self.read.revision,
            data_seq = self.data_seq
        ))
        .await?;
        // And the rows up to the read of customers the recompute did not
        // score (usually nobody).
        for chunk in self.read.unscored.chunks(1_000) {
            let mut insert = Query::insert();
            insert
                .into_table(sea_orm::sea_query::Alias::new(kept.clone()))
                .columns(SCORE_COLUMNS)
                .select_from(
                    Query::select()
                        .columns(SCORE_COLUMNS)
                        .from("scoring_scores")
                        .and_where(Expr::col("revision").lte(self.read.revision))
                        .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk)))
                        .to_owned(),
                )
                .map_err(|e| ApiError::internal(format!("building the takeover: {e}")))?;
            txn.execute(&insert).await.map_err(db_error)?;
        }
        Ok(PreparedReplacement {
            txn: self.txn,
            pool: self.pool,
            table: self.table,
            reserved: self.reserved,
            data_seq: self.data_seq,
            seen,
            started,
        })
    }
}

/// A replacement whose new table is filled and keyed, with the rows of the
/// old table to keep collected up to revision `seen`: scores of customers
/// the recompute did not score, and scores of a later position of the
/// change feed than it read (online scoring while it ran), each with its
/// own revision.
pub struct PreparedReplacement {
    txn: sea_orm::DatabaseTransaction,
    pool: sqlx::PgPool,
    table: String,
    reserved: i64,
    data_seq: i64,
    seen: i64,
    started: std::time::Instant,
}

impl PreparedReplacement {
    /// Takes the reserved revision (all the new scores share it), takes
    /// over the kept rows and those saved since `seen`, swaps the table in
    /// and commits. Other score writes (online scoring) wait for this part
    /// only. Returns the customers whose online
    /// score, newer than the recompute's, was kept.
    pub async fn swap(self) -> Result<Vec<String>, ApiError> {
        let (next, seen, data_seq) = (&self.table, self.seen, self.data_seq);
        let kept = format!("{next}_kept");
        let columns = SCORE_COLUMNS.join(", ");
        let sets = SCORE_COLUMNS[1..]
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let txn = &self.txn;
        let run = |sql: String| async move { txn.execute_unprepared(&sql).await.map_err(db_error) };
        let returning = |sql: String| async move {
            txn.query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql,
            ))
            .await
            .map_err(db_error)?
            .iter()
            .map(|r| r.try_get::<String>("", "customer_id").map_err(db_error))
            .collect::<Result<Vec<_>, _>>()
        };
        // From here to the commit every other score write waits (the counter
        // row orders revisions by commit, see `cursor::next_revision`).
        let revision =
            crate::cursor::next_revision_from(txn, "scoring_score_head", self.reserved).await?;
        let locked = std::time::Instant::now();
        if revision != self.reserved {
            // More online writes than reserved for committed meanwhile.
            tracing::warn!(
                reserved = self.reserved,
                revision,
                "the score counter passed the replacement's reserved revision; rewriting its rows"
            );
            run(format!(
                "UPDATE {next} SET revision = {revision} WHERE revision = {}",
                self.reserved
            ))
            .await?;
        }
        // Every new row is of feed position `data_seq`. Each takeover is two
        // statements, not one upsert: an upsert locks (and so rewrites)
        // every new row it conflicts with. First the rows kept up to `seen`:
        // customers the recompute did not score, then later feed positions.
        run(format!(
            "INSERT INTO {next} ({columns}) SELECT {columns} FROM {kept} k \
             WHERE NOT EXISTS (SELECT 1 FROM {next} n WHERE n.customer_id = k.customer_id)"
        ))
        .await?;
        let mut newer = returning(format!(
            "INSERT INTO {next} ({columns}) SELECT {columns} FROM {kept} WHERE data_seq > {data_seq} \
             ON CONFLICT (customer_id) DO UPDATE SET {sets} \
             WHERE {next}.data_seq < EXCLUDED.data_seq RETURNING customer_id"
        ))
        .await?;
        // Then the rows saved since: customers not in the new table yet, a
        // newer version of a row kept above, and later feed positions than
        // the recompute's own scores.
        let since = format!("(SELECT {columns} FROM scoring_scores WHERE revision > {seen}) s");
        run(format!(
            "INSERT INTO {next} ({columns}) SELECT {columns} FROM {since} \
             WHERE NOT EXISTS (SELECT 1 FROM {next} n WHERE n.customer_id = s.customer_id)"
        ))
        .await?;
        run(format!(
            "UPDATE {next} SET {} FROM {since} WHERE s.customer_id = {next}.customer_id \
             AND {next}.revision <> {revision} AND {next}.revision < s.revision",
            SCORE_COLUMNS[1..]
                .iter()
                .map(|c| format!("{c} = s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
        newer.extend(
            returning(format!(
                "INSERT INTO {next} ({columns}) SELECT {columns} FROM {since} \
                 WHERE data_seq > {data_seq} \
                 ON CONFLICT (customer_id) DO UPDATE SET {sets} \
                 WHERE {next}.data_seq < EXCLUDED.data_seq RETURNING customer_id"
            ))
            .await?,
        );
        for sql in [
            format!("DROP TABLE {kept}"),
            "DROP TABLE scoring_scores".to_owned(),
            // The names the migrations gave the originals.
            format!("ALTER TABLE {next} RENAME TO scoring_scores"),
            format!("ALTER INDEX {next}_pkey RENAME TO scoring_scores_pkey"),
            format!("ALTER INDEX {next}_rev RENAME TO scoring_scores_by_revision"),
        ] {
            run(sql).await?;
        }
        self.txn.commit().await.map_err(db_error)?;
        let locked = locked.elapsed();
        // The planner knows the new table's size (the index builds counted
        // its rows) but not its columns until it is analyzed, which
        // autovacuum does only later (or, where it is off, never): a sample
        // of it, now. The scores are in place and the recompute is done, so
        // it is not waited for (a third of a second at a million scores); a
        // failure is only logged. The next replacement's `DROP TABLE` waits
        // for it.
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match sqlx::raw_sql("ANALYZE scoring_scores").execute(&pool).await {
                Ok(_) => tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "new score table analyzed"
                ),
                Err(e) => tracing::warn!(error = %e, "could not analyze the new score table"),
            }
        });
        newer.sort();
        newer.dedup();
        tracing::info!(
            ms = self.started.elapsed().as_millis() as u64,
            // How long other score writes (online scoring) waited at most.
            locked_ms = locked.as_millis() as u64,
            kept_newer = newer.len(),
            "score table replaced"
        );
        Ok(newer)
    }
}

fn sqlx_error(e: sqlx::Error) -> ApiError {
    db_error(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
        std::sync::Arc::new(e),
    )))
}

/// What one batch of the change feed does to the read model.
#[derive(Debug, Default)]
pub struct ReadModelBatch {
    /// (customer id, region) of created or updated customers.
    pub customers: Vec<(String, String)>,
    /// (customer id, UTC day number, amount nanos, cost nanos, currency) per transaction.
    pub purchases: Vec<(String, i32, i64, i64, String)>,
    /// Customer id per recorded interaction.
    pub interactions: Vec<String>,
    pub erased: Vec<String>,
    /// Customers changed by this batch that online scoring cannot rescore
    /// yet (no recompute has saved a baseline): recorded with the batch's
    /// feed position, for the first recompute to rescore
    /// ([`ScoringStore::awaiting_baseline_after`]).
    pub awaiting_baseline: Vec<String>,
}

/// Upserts one column of `scoring_customers` for many customers, creating
/// missing rows with defaults; `add` increments instead of replacing.
async fn set_customer_column<'a, C: ConnectionTrait>(
    txn: &C,
    column: &'static str,
    values: impl Iterator<Item = (&'a str, sea_orm::Value)>,
    add: bool,
) -> Result<(), ApiError> {
    let slot = match column {
        "region" => 1,
        "interactions" => 2,
        _ => 4,
    };
    let rows = values
        .map(|(id, value)| {
            let mut row: Vec<sea_orm::Value> =
                vec![id.into(), "".into(), 0.into(), false.into(), "".into()];
            row[slot] = value;
            row
        })
        .collect();
    crate::bulk::insert(
        txn,
        "scoring_customers",
        &[
            "customer_id",
            "region",
            "interactions",
            "erased",
            "currency",
        ],
        rows,
        crate::bulk::Conflict::Update {
            key: &["customer_id"],
            columns: &[column],
            how: if add {
                crate::bulk::Update::Add
            } else {
                // Most purchases repeat the customer's currency: no rewrite.
                crate::bulk::Update::ReplaceIfDifferent
            },
        },
        None,
    )
    .await?;
    Ok(())
}

/// What scoring reads to score customers.
#[derive(Debug, Default)]
pub struct ScoringSnapshot {
    /// The read model's position in profile's change feed.
    pub data_seq: i64,
    /// The last score revision saved when the snapshot was taken: scores
    /// written while the snapshot is scored have later ones (see
    /// [`ScoringStore::scores_newer_since`]).
    pub score_revision: i64,
    /// Customers with purchases; index = `CustomerSummary::customer`. In id
    /// order when read by [`ScoringStore::snapshot`].
    pub ids: Vec<String>,
    /// The customers with a purchase up to the scoring date, in customer
    /// order, summarized as they were read (the purchases themselves are
    /// not kept).
    pub summaries: Vec<CustomerSummary>,
    pub facts: FactsById,
}

const FACT_COLUMNS: [&str; 7] = [
    "customer_id",
    "interactions",
    "currency",
    "latest_nps",
    "oldest_open_complaint_day",
    "complaints",
    "erased",
];

/// What scoring knows of every customer (or of `only`) beside purchases,
/// row by row: the full read on SQLite, and the few customers online
/// scoring rescores.
async fn read_customer_facts<C: ConnectionTrait>(
    db: &C,
    only: Option<&[String]>,
) -> Result<FactRows, ApiError> {
    let mut q = Query::select();
    q.columns(FACT_COLUMNS).from("scoring_customers");
    if let Some(ids) = only {
        q.and_where(Expr::col("customer_id").is_in(crate::query::padded(ids)));
    }
    let rows = db.query_all(&q).await.map_err(db_error)?;
    let mut facts = FactRows::with_capacity(rows.len());
    for r in rows {
        let get_i32 = |i: usize| r.try_get_by_index::<i32>(i);
        let facts_of = || -> Result<(String, CustomerFacts), sea_orm::DbErr> {
            Ok((
                r.try_get_by_index(0)?,
                CustomerFacts {
                    interactions: u32::try_from(get_i32(1)?).unwrap_or(0),
                    currency: currency_of(&r.try_get_by_index::<String>(2)?),
                    latest_nps: r.try_get_by_index(3)?,
                    oldest_open_complaint_day: r.try_get_by_index(4)?,
                    complaints: u32::try_from(get_i32(5)?).unwrap_or(0),
                    erased: r.try_get_by_index(6)?,
                },
            ))
        };
        let (id, f) = facts_of().map_err(db_error)?;
        facts.ids.push(id);
        facts.facts.push(f);
    }
    Ok(facts)
}

/// Customers' [`CustomerFacts`] in the order they were read (see
/// [`FactsById`] for them in id order).
#[derive(Default)]
struct FactRows {
    ids: Vec<String>,
    facts: Vec<CustomerFacts>,
}

impl FactRows {
    fn with_capacity(rows: usize) -> Self {
        Self {
            ids: Vec::with_capacity(rows),
            facts: Vec::with_capacity(rows),
        }
    }

    fn append(&mut self, mut other: FactRows) {
        self.ids.append(&mut other.ids);
        self.facts.append(&mut other.facts);
    }

    fn in_id_order(self) -> FactsById {
        FactsById::from_unordered(self.ids, self.facts)
    }
}

impl crate::copy_out::CopyRows for FactRows {
    const FIELDS: usize = 9;

    fn row(&mut self, f: &[&[u8]]) -> Result<(), ApiError> {
        use crate::copy_out::{boolean, int4, text};
        // Each nullable column comes as (IS NULL, value or 0).
        let optional = |null: &[u8], value: &[u8]| -> Result<Option<i32>, ApiError> {
            Ok(if boolean(null)? {
                None
            } else {
                Some(int4(value)?)
            })
        };
        self.ids.push(text(f[0])?.to_owned());
        self.facts.push(CustomerFacts {
            interactions: u32::try_from(int4(f[1])?).unwrap_or(0),
            currency: currency_of(text(f[2])?),
            latest_nps: optional(f[3], f[4])?,
            oldest_open_complaint_day: optional(f[5], f[6])?,
            complaints: u32::try_from(int4(f[7])?).unwrap_or(0),
            erased: boolean(f[8])?,
        });
        Ok(())
    }
}

/// A stored currency code ("" before the customer's first purchase).
fn currency_of(code: &str) -> Option<Currency> {
    (!code.is_empty())
        .then(|| Currency::parse(code).ok())
        .flatten()
}

/// Every customer's [`CustomerFacts`] as `snapshot` (exported by `txn`)
/// sees them, with binary COPY over two connections (a million rows
/// collected as query results, then looked up by column name, took longer
/// than the purchase histories themselves), put in id order on a blocking
/// thread.
async fn read_customer_facts_postgres<C: ConnectionTrait>(
    txn: &C,
    pool: &sqlx::PgPool,
    snapshot: &str,
) -> Result<FactsById, ApiError> {
    let columns = "customer_id, interactions, currency, \
                   latest_nps IS NULL, coalesce(latest_nps, 0), \
                   oldest_open_complaint_day IS NULL, coalesce(oldest_open_complaint_day, 0), \
                   complaints, erased";
    let (mut all, second) = crate::copy_out::copy_out_in_halves(
        txn,
        pool,
        snapshot,
        "scoring_customers",
        columns,
        |_, rows| FactRows::with_capacity(rows),
    )
    .await?;
    all.append(second);
    tokio::task::spawn_blocking(move || all.in_id_order())
        .await
        .map_err(|e| ApiError::internal(format!("ordering the customers' facts: {e}")))
}

#[derive(Clone)]
pub struct ScoringStore {
    db: DatabaseConnection,
}

impl ScoringStore {
    pub fn new(storage: &Storage) -> Self {
        Self {
            db: storage.connection().clone(),
        }
    }

    pub async fn cursor(&self, consumer: &str) -> Result<i64, ApiError> {
        crate::cursor::load(&self.db, "scoring_feed_cursor", consumer).await
    }

    /// Applies a batch and moves the cursor in one transaction.
    pub async fn apply(
        &self,
        consumer: &str,
        batch: ReadModelBatch,
        advance: crate::cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        // The cursor first: on PostgreSQL its row stays locked until
        // commit, so a replica applying the same batch waits here, then
        // fails, before it reads any purchase history to merge into.
        crate::cursor::save(&txn, "scoring_feed_cursor", consumer, advance).await?;
        let regions: HashMap<&str, &str> = batch
            .customers
            .iter()
            .map(|(id, r)| (id.as_str(), r.as_str()))
            .collect();
        set_customer_column(
            &txn,
            "region",
            regions.into_iter().map(|(id, r)| (id, r.into())),
            false,
        )
        .await?;
        let currencies: HashMap<&str, &str> = batch
            .purchases
            .iter()
            .map(|(id, _, _, _, c)| (id.as_str(), c.as_str()))
            .collect();
        set_customer_column(
            &txn,
            "currency",
            currencies.into_iter().map(|(id, c)| (id, c.into())),
            false,
        )
        .await?;
        let mut days: HashMap<(&str, i32), (i64, i64, i32)> = HashMap::new();
        for (id, day, amount, cost, _) in &batch.purchases {
            let e = days.entry((id, *day)).or_default();
            e.0 += amount;
            e.1 += cost;
            e.2 += 1;
        }
        let mut histories: HashMap<&str, Vec<PurchaseDay>> = HashMap::new();
        for ((id, day), (amount_nanos, cost_nanos, transactions)) in days {
            histories.entry(id).or_default().push(PurchaseDay {
                day,
                amount_nanos,
                cost_nanos,
                transactions,
            });
        }
        for days in histories.values_mut() {
            days.sort_unstable_by_key(|d| d.day);
        }
        crate::purchase_days::add_to_histories(&txn, histories).await?;
        let mut interactions: HashMap<&str, i32> = HashMap::new();
        for id in &batch.interactions {
            *interactions.entry(id).or_default() += 1;
        }
        set_customer_column(
            &txn,
            "interactions",
            interactions.into_iter().map(|(id, n)| (id, n.into())),
            true,
        )
        .await?;
        if !batch.erased.is_empty() {
            txn.execute(
                Query::update()
                    .table("scoring_customers")
                    .value("erased", true)
                    .and_where(Expr::col("customer_id").is_in(crate::query::padded(&batch.erased))),
            )
            .await
            .map_err(db_error)?;
        }
        let mut awaiting = batch.awaiting_baseline;
        awaiting.sort_unstable();
        awaiting.dedup();
        crate::bulk::insert(
            &txn,
            "scoring_awaiting_baseline",
            &["customer_id", "data_seq"],
            awaiting
                .into_iter()
                .map(|id| vec![id.into(), advance.to.into()])
                .collect(),
            crate::bulk::Conflict::Update {
                key: &["customer_id"],
                columns: &["data_seq"],
                how: crate::bulk::Update::Replace,
            },
            None,
        )
        .await?;
        txn.commit().await.map_err(db_error)
    }

    /// Adds transactions to the product rollup and acknowledges `cursor`
    /// for `consumer`, in one transaction.
    pub async fn apply_products(
        &self,
        consumer: &str,
        rows: &[ProductRow],
        advance: crate::cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        // (day, region, category, channel, currency, customer) ->
        // (transactions, quantity, amount)
        type Group<'a> = (i32, &'a str, &'a str, &'a str, &'a str, &'a str);
        let mut grouped: HashMap<Group<'_>, (i64, i64, i64)> = HashMap::new();
        for r in rows {
            let e = grouped
                .entry((
                    r.day,
                    &r.region,
                    &r.category,
                    &r.channel,
                    &r.currency,
                    &r.customer_id,
                ))
                .or_default();
            e.0 += 1;
            e.1 += r.quantity;
            e.2 += r.amount_nanos;
        }
        let columns = crate::product_groups::COLUMNS;
        let rows = grouped
            .into_iter()
            .map(
                |((day, region, category, channel, currency, customer), (n, quantity, amount))| {
                    vec![
                        day.into(),
                        region.into(),
                        category.into(),
                        channel.into(),
                        currency.into(),
                        customer.into(),
                        n.into(),
                        quantity.into(),
                        amount.into(),
                    ]
                },
            )
            .collect();
        crate::bulk::insert(
            &txn,
            "scoring_product_days",
            &columns,
            rows,
            crate::bulk::Conflict::Update {
                key: &columns[..6],
                columns: &columns[6..],
                how: crate::bulk::Update::Add,
            },
            None,
        )
        .await?;
        crate::cursor::save(&txn, "scoring_feed_cursor", consumer, advance).await?;
        txn.commit().await.map_err(db_error)
    }

    /// The product distribution's groups over the rollup's days in
    /// `[from_day, to_day)`, by the periods starting on `period_starts`,
    /// and by channel too if `by_channel` (see [`crate::product_groups`]).
    pub async fn product_groups(
        &self,
        from_day: i32,
        to_day: i32,
        period_starts: &[i32],
        by_channel: bool,
    ) -> Result<Vec<ProductGroup>, ApiError> {
        crate::product_groups::read(&self.db, from_day, to_day, period_starts, by_channel).await
    }

    /// Everything a recompute reads, from one consistent snapshot (a
    /// read-only repeatable-read transaction on PostgreSQL; a read
    /// transaction is a snapshot on SQLite), with the read model's feed
    /// position for `consumer` in that snapshot; customers summarized as of
    /// `as_of_day`.
    pub async fn snapshot(
        &self,
        consumer: &str,
        as_of_day: i32,
    ) -> Result<ScoringSnapshot, ApiError> {
        let txn = self.begin_snapshot().await?;
        let data_seq = crate::cursor::load(&txn, "scoring_feed_cursor", consumer).await?;
        let score_revision = crate::cursor::last_revision(&txn, "scoring_score_head").await?;
        // Both in the transaction's snapshot; on PostgreSQL each read has
        // two connections of its own, so they overlap, and each is put in
        // id order on a blocking thread as soon as it is in (the other may
        // still be coming).
        let (days, facts) = if self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let pool = self.db.get_postgres_connection_pool();
            let snapshot = crate::purchase_days::export_snapshot(&txn).await?;
            let days = async {
                let read = crate::purchase_days::read_all_postgres(
                    &txn,
                    pool,
                    &snapshot,
                    Summaries::as_of(as_of_day),
                )
                .await?;
                tokio::task::spawn_blocking(move || read.finish())
                    .await
                    .map_err(|e| ApiError::internal(format!("ordering the histories: {e}")))
            };
            tokio::join!(days, read_customer_facts_postgres(&txn, pool, &snapshot))
        } else {
            (
                crate::purchase_days::read_rows(&txn, None, Summaries::as_of(as_of_day))
                    .await
                    .map(Summaries::finish),
                read_customer_facts(&txn, None)
                    .await
                    .map(FactRows::in_id_order),
            )
        };
        let ((ids, summaries), facts) = (days?, facts?);
        txn.commit().await.map_err(db_error)?;
        Ok(ScoringSnapshot {
            data_seq,
            score_revision,
            ids,
            summaries,
            facts,
        })
    }

    /// Every customer's purchases (see [`ScoringSnapshot`]), from one
    /// consistent snapshot.
    pub async fn purchase_days(&self) -> Result<(Vec<String>, Vec<Purchase>), ApiError> {
        let txn = self.begin_snapshot().await?;
        let all = self.all_histories(&txn, PurchaseDays::default()).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(all.finish())
    }

    /// Each customer's purchase days and nothing else (population reports),
    /// from one consistent snapshot: on PostgreSQL with binary COPY over two
    /// connections, as a recompute reads.
    pub async fn customer_days(&self) -> Result<CustomerDays, ApiError> {
        let txn = self.begin_snapshot().await?;
        let days = self.all_histories(&txn, CustomerDays::default()).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(days)
    }

    /// A read-only repeatable-read transaction on PostgreSQL; a read
    /// transaction is a snapshot on SQLite.
    async fn begin_snapshot(&self) -> Result<sea_orm::DatabaseTransaction, ApiError> {
        use sea_orm::{
            AccessMode, DbBackend, IsolationLevel, TransactionOptions, TransactionTrait,
        };
        let postgres = self.db.get_database_backend() == DbBackend::Postgres;
        self.db
            .begin_with_options(TransactionOptions {
                isolation_level: postgres.then_some(IsolationLevel::RepeatableRead),
                access_mode: postgres.then_some(AccessMode::ReadOnly),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_error)
    }

    /// Every customer's purchase history `txn` sees, into `empty`: on
    /// PostgreSQL with binary COPY over two connections sharing its snapshot
    /// (see `purchase_days.rs`).
    async fn all_histories<R: crate::purchase_days::Histories>(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        empty: R,
    ) -> Result<R, ApiError> {
        if self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let pool = self.db.get_postgres_connection_pool();
            let snapshot = crate::purchase_days::export_snapshot(txn).await?;
            crate::purchase_days::read_all_postgres(txn, pool, &snapshot, empty).await
        } else {
            crate::purchase_days::read_rows(txn, None, empty).await
        }
    }

    /// [`Self::snapshot`] of some customers only (online scoring), read
    /// without a snapshot: the caller scores after its own batch committed.
    pub async fn histories(
        &self,
        only: &[String],
        as_of_day: i32,
    ) -> Result<ScoringSnapshot, ApiError> {
        let mut out = ScoringSnapshot::default();
        let mut facts = FactRows::default();
        for chunk in only.chunks(1_000) {
            let (ids, summaries) =
                crate::purchase_days::read_rows(&self.db, Some(chunk), Summaries::as_of(as_of_day))
                    .await?
                    .finish();
            let offset = out.ids.len() as u32;
            out.ids.extend(ids);
            out.summaries
                .extend(summaries.into_iter().map(|s| CustomerSummary {
                    customer: s.customer + offset,
                    ..s
                }));
            facts.append(read_customer_facts(&self.db, Some(chunk)).await?);
        }
        out.facts = facts.in_id_order();
        Ok(out)
    }

    /// Stores feedback signals (customer id, signals) and acknowledges
    /// `revision` of feedback's summary stream for `consumer`, in one
    /// transaction; customers not seen in the profile feed yet get a row.
    pub async fn apply_feedback(
        &self,
        consumer: &str,
        signals: &[(String, FeedbackSignals)],
        advance: crate::cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let columns = [
            "customer_id",
            "region",
            "interactions",
            "erased",
            "currency",
            "latest_nps",
            "oldest_open_complaint_day",
            "complaints",
        ];
        let rows = signals
            .iter()
            .map(|(id, f)| {
                vec![
                    id.as_str().into(),
                    "".into(),
                    0.into(),
                    false.into(),
                    "".into(),
                    f.latest_nps.into(),
                    f.oldest_open_complaint_day.into(),
                    f.complaints.into(),
                ]
            })
            .collect();
        crate::bulk::insert(
            &txn,
            "scoring_customers",
            &columns,
            rows,
            crate::bulk::Conflict::Update {
                key: &["customer_id"],
                columns: &columns[5..],
                how: crate::bulk::Update::Replace,
            },
            None,
        )
        .await?;
        crate::cursor::save(&txn, "scoring_feed_cursor", consumer, advance).await?;
        txn.commit().await.map_err(db_error)
    }

    /// Stores computed scores, replacing older ones, except scores that
    /// reflect a later position of the change feed than `data_seq` (a
    /// recompute must not overwrite an online update made after it read).
    pub async fn save_scores(
        &self,
        computed_at: DateTime<Utc>,
        data_seq: i64,
        scores: &[ScoreRow],
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let revision = crate::cursor::next_revision(&txn, "scoring_score_head").await?;
        let stamp = ScoreStamp {
            computed_at,
            revision,
            data_seq,
        };
        crate::bulk::insert(
            &txn,
            "scoring_scores",
            &SCORE_COLUMNS,
            stamp.rows(scores),
            crate::bulk::Conflict::Update {
                key: &["customer_id"],
                columns: &SCORE_COLUMNS[1..],
                how: crate::bulk::Update::ReplaceUnlessNewer("data_seq"),
            },
            None,
        )
        .await?;
        txn.commit().await.map_err(db_error)
    }

    /// Of the scores saved after revision `after`, the customers whose
    /// score reflects a later position of the change feed than `data_seq`
    /// (online scores written while a recompute that read at `data_seq`
    /// ran), and the last revision seen, to pass as `after` next time: a
    /// range of the revision index, so asking again and again while a
    /// recompute runs costs only what was saved since.
    ///
    /// Revisions become visible in order (`cursor::next_revision`), so
    /// nothing at or below the returned revision can appear later.
    pub async fn scores_newer_since(
        &self,
        after: i64,
        data_seq: i64,
    ) -> Result<(Vec<String>, i64), ApiError> {
        // In pages in index order: with `ORDER BY ... LIMIT` the planner
        // walks the index even on a table it has no statistics for yet (a
        // score table just swapped in), where `revision > r` alone is
        // estimated at a third of the table and read with a full scan.
        const PAGE: u64 = 10_000;
        let mut newer = Vec::new();
        let mut at: (i64, Option<String>) = (after, None);
        loop {
            let rows = self
                .db
                .query_all(&crate::query::page_after(
                    "scoring_scores",
                    ["customer_id", "revision", "data_seq"],
                    (at.0, at.1.as_deref()),
                    PAGE,
                ))
                .await
                .map_err(db_error)?;
            for r in &rows {
                let id: String = r.try_get("", "customer_id").map_err(db_error)?;
                if r.try_get::<i64>("", "data_seq").map_err(db_error)? > data_seq {
                    newer.push(id.clone());
                }
                at = (r.try_get("", "revision").map_err(db_error)?, Some(id));
            }
            if (rows.len() as u64) < PAGE {
                return Ok((newer, at.0));
            }
        }
    }

    /// Starts replacing every stored score with a full recompute's, on
    /// PostgreSQL (`None` elsewhere: save the scores in chunks instead).
    ///
    /// Rewriting a million rows in place leaves a million dead versions in
    /// a table that is rewritten again at the next recompute; instead the
    /// new scores go into a fresh table without indexes, which is indexed
    /// and swapped in at the end (see [`ScoreReplacement`]). The whole
    /// recompute becomes visible at once, with one revision; online scoring
    /// goes on while the scores are copied, and waits only for the swap
    /// ([`ScoreReplacement::finish`]).
    pub async fn begin_replacement(
        &self,
        computed_at: DateTime<Utc>,
        data_seq: i64,
        read: RecomputeRead,
    ) -> Result<Option<ScoreReplacement>, ApiError> {
        if self.db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(None);
        }
        let txn = begin_write(&self.db).await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({REPLACEMENT_LOCK})"))
            .await
            .map_err(db_error)?;
        // Holding the lock, no other replacement runs: tables left by one
        // that died half-way are orphans.
        let leftovers = txn
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT tablename FROM pg_tables WHERE tablename LIKE '{NEXT_SCORES}%'"),
            ))
            .await
            .map_err(db_error)?;
        for r in leftovers {
            let table: String = r.try_get("", "tablename").map_err(db_error)?;
            txn.execute_unprepared(&format!("DROP TABLE IF EXISTS \"{table}\""))
                .await
                .map_err(db_error)?;
        }
        // The new table is filled with COPY over a connection of its own
        // (COPY needs the driver's connection, which the transaction does
        // not expose), so it is created and filled outside the transaction;
        // a unique name keeps it apart until the swap.
        let table = format!("{NEXT_SCORES}_{}", uuid::Uuid::now_v7().simple());
        // Every row gets the reserved revision from the column's default
        // (`COPIED_COLUMNS`).
        let reserved =
            crate::cursor::last_revision(&txn, "scoring_score_head").await? + REVISIONS_RESERVED;
        let pool = self.db.get_postgres_connection_pool();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (LIKE scoring_scores INCLUDING DEFAULTS); \
             ALTER TABLE {table} ALTER COLUMN revision SET DEFAULT {reserved}"
        )))
        .execute(pool)
        .await
        .map_err(sqlx_error)?;
        let mut copy = pool
            .copy_in_raw(&format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                COPIED_COLUMNS.join(", ")
            ))
            .await
            .map_err(sqlx_error)?;
        let mut header = crate::copy_out::SIGNATURE.to_vec();
        header.extend([0u8; 8]); // flags, header extension length
        copy.send(header).await.map_err(sqlx_error)?;
        Ok(Some(ScoreReplacement {
            txn,
            copy,
            pool: pool.clone(),
            table,
            reserved,
            computed_at,
            data_seq,
            read,
        }))
    }

    /// Up to `limit` encoded scores saved after `after` (revision, customer
    /// id), in that order, with their revisions.
    /// `(r, None)` starts after all of revision `r`; `(r, Some(id))` resumes
    /// within revision `r` after customer `id` (the next page).
    pub async fn scores_after(
        &self,
        after: (i64, Option<&str>),
        limit: u64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, ApiError> {
        let rows = self
            .db
            .query_all(&crate::query::page_after(
                "scoring_scores",
                ["revision", "customer_id", "score"],
                after,
                limit,
            ))
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "revision").map_err(db_error)?,
                    r.try_get("", "customer_id").map_err(db_error)?,
                    r.try_get("", "score").map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// Counts of the stored scores per label of every dimension, each
    /// dimension's labels in name order.
    pub async fn distribution(&self) -> Result<Distribution, ApiError> {
        let mut out = Distribution::default();
        for (dimension, column) in DISTRIBUTION_COLUMNS.into_iter().enumerate() {
            let rows = self
                .db
                .query_all(
                    Query::select()
                        .column(column)
                        .expr_as(Expr::col(column).count(), "n")
                        .from("scoring_scores")
                        .group_by_col(column),
                )
                .await
                .map_err(db_error)?;
            let mut counts = rows
                .iter()
                .map(|r| {
                    let code: i16 = r.try_get("", column).map_err(db_error)?;
                    let n: i64 = r.try_get("", "n").map_err(db_error)?;
                    Ok((column, label_name(dimension, code), n))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            counts.sort_by_key(|(_, label, _)| *label);
            if dimension == 0 {
                out.customers = counts.iter().map(|(_, _, n)| n).sum();
            }
            out.counts.extend(counts);
        }
        let latest = self
            .db
            .query_one(
                Query::select()
                    .expr_as(Expr::col("computed_at").max(), "latest")
                    .from("scoring_scores"),
            )
            .await
            .map_err(db_error)?;
        out.computed_at = latest.and_then(|r| {
            r.try_get::<Option<DateTime<Utc>>>("", "latest")
                .ok()
                .flatten()
        });
        Ok(out)
    }

    /// Stored scores of these customers (encoded), by id.
    pub async fn scores(&self, ids: &[String]) -> Result<HashMap<String, Vec<u8>>, ApiError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let rows = self
                .db
                .query_all(
                    Query::select()
                        .columns(["customer_id", "score"])
                        .from("scoring_scores")
                        .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk))),
                )
                .await
                .map_err(db_error)?;
            for r in rows {
                out.insert(
                    r.try_get("", "customer_id").map_err(db_error)?,
                    r.try_get("", "score").map_err(db_error)?,
                );
            }
        }
        Ok(out)
    }

    pub async fn save_model(
        &self,
        version: &str,
        create_time: DateTime<Utc>,
        fit: Vec<u8>,
    ) -> Result<(), ApiError> {
        self.db
            .execute(
                Query::insert()
                    .into_table("scoring_models")
                    .columns(["model_version", "create_time", "fit"])
                    .values_panic([version.into(), create_time.into(), fit.into()]),
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The encoded fit of the newest model.
    pub async fn latest_model(&self) -> Result<Option<Vec<u8>>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .column("fit")
                    .from("scoring_models")
                    .order_by("create_time", sea_orm::Order::Desc)
                    .order_by("model_version", sea_orm::Order::Desc)
                    .limit(1),
            )
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("", "fit").map_err(db_error))
            .transpose()
    }

    /// Records a recompute's population baseline (JSON) and its model.
    pub async fn save_baseline(
        &self,
        model_version: &str,
        computed_at: DateTime<Utc>,
        data_seq: i64,
        baseline: &str,
    ) -> Result<(), ApiError> {
        self.db
            .execute(
                Query::insert()
                    .into_table("scoring_baselines")
                    .columns(["id", "model_version", "computed_at", "data_seq", "baseline"])
                    .values_panic([
                        computed_at.timestamp_micros().into(),
                        model_version.into(),
                        computed_at.into(),
                        data_seq.into(),
                        baseline.into(),
                    ])
                    .on_conflict(OnConflict::column("id").do_nothing().to_owned()),
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Customers of the read model without a stored score.
    pub async fn customers_without_score(&self) -> Result<Vec<String>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .column(("c", "customer_id"))
                    .from_as("scoring_customers", "c")
                    .and_where(
                        Expr::exists(
                            Query::select()
                                .expr(Expr::val(1))
                                .from_as("scoring_scores", "s")
                                .and_where(
                                    Expr::col(("s", "customer_id")).equals(("c", "customer_id")),
                                )
                                .to_owned(),
                        )
                        .not(),
                    ),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get("", "customer_id").map_err(db_error))
            .collect()
    }

    /// Customers recorded by the feed consumer while there was no baseline
    /// (see [`ReadModelBatch::awaiting_baseline`]) whose latest change came
    /// after feed position `data_seq`.
    pub async fn awaiting_baseline_after(&self, data_seq: i64) -> Result<Vec<String>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .column("customer_id")
                    .from("scoring_awaiting_baseline")
                    .and_where(Expr::col("data_seq").gt(data_seq)),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get("", "customer_id").map_err(db_error))
            .collect()
    }

    /// Forgets the customers awaiting a baseline once the first one is
    /// saved and they are scored: from then on online scoring scores every
    /// change itself.
    pub async fn clear_awaiting_baseline(&self) -> Result<(), ApiError> {
        // A database loaded before the first recompute lists every customer
        // here: on PostgreSQL TRUNCATE drops a million rows at once, where
        // DELETE would take seconds.
        let sql = match self.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => "TRUNCATE scoring_awaiting_baseline",
            _ => "DELETE FROM scoring_awaiting_baseline",
        };
        self.db.execute_unprepared(sql).await.map_err(db_error)?;
        Ok(())
    }

    /// The id of the newest baseline, to tell whether a held one is current.
    pub async fn latest_baseline_id(&self) -> Result<Option<i64>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .expr_as(Expr::col("id").max(), "id")
                    .from("scoring_baselines"),
            )
            .await
            .map_err(db_error)?;
        Ok(row.and_then(|r| r.try_get::<Option<i64>>("", "id").ok().flatten()))
    }

    /// (id, model version, JSON) of the newest baseline.
    pub async fn latest_baseline(&self) -> Result<Option<(i64, String, String)>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .columns(["id", "model_version", "baseline"])
                    .from("scoring_baselines")
                    .order_by("id", sea_orm::Order::Desc)
                    .limit(1),
            )
            .await
            .map_err(db_error)?;
        row.map(|r| {
            Ok((
                r.try_get("", "id").map_err(db_error)?,
                r.try_get("", "model_version").map_err(db_error)?,
                r.try_get("", "baseline").map_err(db_error)?,
            ))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts_of(ids: &[String]) -> FactsById {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let facts = CustomerFacts {
                    interactions: i as u32,
                    ..CustomerFacts::default()
                };
                (id.clone(), facts)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever order the customers came in and the ids are asked for
        /// in (ascending, as a recompute asks, or any), a cursor finds
        /// each customer read, with its own facts, and nobody else.
        #[test]
        fn a_cursor_finds_exactly_the_customers_read(
            read in proptest::collection::hash_set("[a-e]{0,4}", 0..40),
            asked in proptest::collection::vec("[a-e]{0,4}", 0..60),
            ascending in any::<bool>(),
        ) {
            let read: Vec<String> = read.into_iter().collect();
            let facts = facts_of(&read);
            prop_assert!(facts.iter().map(|(id, _)| id).is_sorted());
            let mut asked = asked;
            if ascending {
                asked.sort();
            }
            let mut cursor = facts.cursor();
            for id in &asked {
                let found = cursor.find(id).map(|at| facts.at(at));
                let expected = read.iter().position(|r| r == id);
                prop_assert_eq!(found.map(|(id, _)| id), expected.map(|_| id.as_str()));
                prop_assert_eq!(
                    found.map(|(_, f)| f.interactions),
                    expected.map(|i| i as u32)
                );
            }
        }
    }

    #[test]
    fn label_codes_name_their_place_in_the_migrations_list() {
        assert_eq!(
            DISTRIBUTION_COLUMNS,
            [
                "segment",
                "value_tier",
                "value_quadrant",
                "churn_risk",
                "lifecycle_stage"
            ]
        );
        assert_eq!(label_name(0, 0), "");
        assert_eq!(label_name(0, 1), "champions");
        assert_eq!(label_name(1, 3), "VALUE_TIER_HIGH");
        assert_eq!(label_name(4, 6), "LIFECYCLE_STAGE_CHURNED");
        for (dimension, (_, labels)) in SCORE_LABELS.iter().enumerate() {
            for code in [-1, labels.len() as i16, i16::MAX] {
                assert_eq!(label_name(dimension, code), "", "unknown {code}");
            }
        }
    }

    #[test]
    fn a_replacement_copies_every_score_column_but_the_revision() {
        let mut want = SCORE_COLUMNS.to_vec();
        want.retain(|c| *c != "revision");
        assert_eq!(COPIED_COLUMNS, want);
    }
}
