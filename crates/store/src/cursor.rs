//! Change-feed cursors of consumers in other services: one row per consumer
//! in the consuming service's own cursor table, written in the same
//! transaction as the effects of the batch it acknowledges.

use patron_domain::ApiError;
use sea_orm::{
    ConnectionTrait,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
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

/// Records `sequence` as acknowledged, inside the caller's transaction.
pub(crate) async fn save<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    consumer: &str,
    sequence: i64,
) -> Result<(), ApiError> {
    db.execute(
        Query::insert()
            .into_table(table)
            .columns(["consumer", "after_sequence"])
            .values_panic([consumer.into(), sequence.into()])
            .on_conflict(
                OnConflict::column("consumer")
                    .update_column("after_sequence")
                    .to_owned(),
            ),
    )
    .await
    .map_err(db_error)?;
    Ok(())
}
