//! Change-feed cursors of consumers in other services: one row per consumer
//! in the consuming service's own cursor table, written in the same
//! transaction as the effects of the batch it acknowledges.
//!
//! The move is a compare-and-set from the cursor the batch was read after,
//! so replicas of a service can all follow the same feed: the first to
//! commit a batch wins, the others' transactions fail with ABORTED
//! (`CURSOR_MOVED`) and roll back, and they resume from the new cursor.
//! Nothing is applied twice, however many replicas run.

use patron_domain::ApiError;
use sea_orm::{
    ConnectionTrait,
    sea_query::{Expr, ExprTrait, Func, OnConflict, Query},
};

use crate::db_error;

/// The last acknowledged sequence of `consumer` (0 before the first batch).
pub(crate) async fn load<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    consumer: &str,
) -> Result<i64, ApiError> {
    let row = db
        .query_one(
            Query::select()
                .column("after_sequence")
                .from(table)
                .and_where(Expr::col("consumer").eq(consumer)),
        )
        .await
        .map_err(db_error)?;
    row.map_or(Ok(0), |r| r.try_get("", "after_sequence").map_err(db_error))
}

/// A batch's place in a feed: it was read after `from` and acknowledges `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    pub from: i64,
    pub to: i64,
}

/// The reason of the ABORTED error when another replica moved the cursor first.
pub const CURSOR_MOVED: &str = "CURSOR_MOVED";

/// Moves the cursor `from` -> `to` inside the caller's transaction, or
/// fails with ABORTED (`CURSOR_MOVED`) when it is no longer at `from`.
pub(crate) async fn save<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    consumer: &str,
    advance: Advance,
) -> Result<(), ApiError> {
    // On PostgreSQL the UPDATE locks the row: a competing replica waits for
    // this transaction, then finds the cursor moved and updates nothing.
    let updated = db
        .execute(
            Query::update()
                .table(table)
                .value("after_sequence", advance.to)
                .and_where(Expr::col("consumer").eq(consumer))
                .and_where(Expr::col("after_sequence").eq(advance.from)),
        )
        .await
        .map_err(db_error)?
        .rows_affected();
    if updated == 1 {
        return Ok(());
    }
    if advance.from == 0 {
        // The first batch: no row yet, unless a competitor just made one.
        let inserted = db
            .execute(
                Query::insert()
                    .into_table(table)
                    .columns(["consumer", "after_sequence"])
                    .values_panic([consumer.into(), advance.to.into()])
                    .on_conflict(OnConflict::column("consumer").do_nothing().to_owned()),
            )
            .await
            .map_err(db_error)?
            .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
    }
    Err(ApiError::aborted(
        CURSOR_MOVED,
        format!(
            "the {consumer} cursor is no longer at {}: another replica applied this batch",
            advance.from
        ),
    ))
}

/// The last revision of a feed this service publishes, as `db` sees it.
pub(crate) async fn last_revision<C: ConnectionTrait>(
    db: &C,
    head: &'static str,
) -> Result<i64, ApiError> {
    db.query_one(
        Query::select()
            .column("last_revision")
            .from(head)
            .and_where(Expr::col("id").eq(1)),
    )
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::internal(format!("{head} row is missing")))?
    .try_get("", "last_revision")
    .map_err(db_error)
}

/// Takes the next revision of a feed this service publishes (a `*_head`
/// table holding one counter row), inside the caller's transaction. The
/// counter row stays locked until commit, so revisions become visible in
/// order: a follower that has seen revision r has seen everything before
/// it.
pub(crate) async fn next_revision<C: ConnectionTrait>(
    txn: &C,
    head: &'static str,
) -> Result<i64, ApiError> {
    next_revision_from(txn, head, 0).await
}

/// [`next_revision`], but at least `at_least`: a writer that reserved a
/// revision ahead of the counter (see `scoring::ScoreReplacement`) takes
/// it, and the counter skips ahead to it. Followers only compare
/// revisions, so a skip is invisible to them.
pub(crate) async fn next_revision_from<C: ConnectionTrait>(
    txn: &C,
    head: &'static str,
    at_least: i64,
) -> Result<i64, ApiError> {
    txn.query_one(
        Query::update()
            .table(head)
            .value(
                "last_revision",
                Func::greatest([Expr::col("last_revision").add(1), Expr::val(at_least)]),
            )
            .and_where(Expr::col("id").eq(1))
            .returning_col("last_revision"),
    )
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::internal(format!("{head} row is missing")))?
    .try_get("", "last_revision")
    .map_err(db_error)
}
