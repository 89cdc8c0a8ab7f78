//! The change-feed outbox.

use chrono::{DateTime, Utc};
use patron_domain::ApiError;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use super::{ProfileStore, entity::change};
use crate::{bulk, db_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Customer,
    Transaction,
    Event,
    Interaction,
    Erasure,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Customer => "customer",
            ChangeKind::Transaction => "transaction",
            ChangeKind::Event => "event",
            ChangeKind::Interaction => "interaction",
            ChangeKind::Erasure => "erasure",
        }
    }
}

/// A change to append.
pub struct NewChange {
    pub kind: ChangeKind,
    pub customer_id: String,
    pub payload: Vec<u8>,
}

/// A stored change.
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub sequence: i64,
    pub commit_time: DateTime<Utc>,
    pub payload: Vec<u8>,
}

/// Appends `changes` inside the caller's transaction and returns the last
/// sequence used. The counter row's lock is held until commit, so sequences
/// become visible in order and without gaps.
pub(crate) async fn append<C: ConnectionTrait>(
    txn: &C,
    changes: Vec<NewChange>,
    now: DateTime<Utc>,
) -> Result<i64, ApiError> {
    if changes.is_empty() {
        return Ok(0);
    }
    let n = changes.len() as i64;
    let row = txn
        .query_one(
            Query::update()
                .table("profile_feed_head")
                .value("last_sequence", Expr::col("last_sequence").add(n))
                .and_where(Expr::col("id").eq(1))
                .returning_col("last_sequence"),
        )
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::internal("profile_feed_head row is missing"))?;
    let last: i64 = row.try_get("", "last_sequence").map_err(db_error)?;
    let first = last - n + 1;
    let rows = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                (first + i as i64).into(),
                now.into(),
                c.kind.as_str().to_owned().into(),
                c.customer_id.into(),
                c.payload.into(),
            ]
        })
        .collect();
    bulk::insert(
        txn,
        "profile_changes",
        &["sequence", "commit_time", "kind", "customer_id", "payload"],
        rows,
        bulk::Conflict::Fail,
        None,
    )
    .await?;
    Ok(last)
}

impl ProfileStore {
    /// Up to `limit` changes with a sequence greater than `after`, in order.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<ChangeRow>, ApiError> {
        // Only the columns the stream sends.
        let rows: Vec<(i64, DateTime<Utc>, Vec<u8>)> = change::Entity::find()
            .select_only()
            .column(change::Column::Sequence)
            .column(change::Column::CommitTime)
            .column(change::Column::Payload)
            .filter(change::Column::Sequence.gt(after))
            .order_by_asc(change::Column::Sequence)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(sequence, commit_time, payload)| ChangeRow {
                sequence,
                commit_time,
                payload,
            })
            .collect())
    }

    /// The highest committed sequence.
    pub async fn head_sequence(&self) -> Result<i64, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .column("last_sequence")
                    .from("profile_feed_head")
                    .and_where(Expr::col("id").eq(1)),
            )
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::internal("profile_feed_head row is missing"))?;
        row.try_get("", "last_sequence").map_err(db_error)
    }
}
