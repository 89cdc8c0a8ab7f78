//! The scoring service's tables: its read model of customers and purchase
//! days (fed by the profile change feed), its feed cursor, and fitted models.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use patron_domain::{ApiError, models::summary::Purchase};
use sea_orm::{
    ConnectionTrait, DatabaseConnection,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::{Storage, begin_write, db_error};

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
        cursor: i64,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let mut regions: HashMap<&str, &str> = HashMap::new();
        for (id, region) in &batch.customers {
            regions.insert(id, region);
        }
        for chunk in regions.into_iter().collect::<Vec<_>>().chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("scoring_customers").columns([
                "customer_id",
                "region",
                "interactions",
                "erased",
            ]);
            for (id, region) in chunk {
                q.values_panic([(*id).into(), (*region).into(), 0.into(), false.into()]);
            }
            q.on_conflict(
                OnConflict::column("customer_id")
                    .update_column("region")
                    .to_owned(),
            );
            txn.execute(&q).await.map_err(db_error)?;
        }
        let mut currencies: HashMap<&str, &str> = HashMap::new();
        for (id, _, _, _, currency) in &batch.purchases {
            currencies.insert(id, currency);
        }
        for chunk in currencies.into_iter().collect::<Vec<_>>().chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("scoring_customers").columns([
                "customer_id",
                "region",
                "interactions",
                "erased",
                "currency",
            ]);
            for (id, currency) in chunk {
                q.values_panic([
                    (*id).into(),
                    "".into(),
                    0.into(),
                    false.into(),
                    (*currency).into(),
                ]);
            }
            q.on_conflict(
                OnConflict::column("customer_id")
                    .update_column("currency")
                    .to_owned(),
            );
            txn.execute(&q).await.map_err(db_error)?;
        }
        let mut days: HashMap<(&str, i32), (i64, i64, i32)> = HashMap::new();
        for (id, day, amount, cost, _) in &batch.purchases {
            let e = days.entry((id, *day)).or_default();
            e.0 += amount;
            e.1 += cost;
            e.2 += 1;
        }
        for chunk in days.into_iter().collect::<Vec<_>>().chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("scoring_customer_days").columns([
                "customer_id",
                "day",
                "amount_nanos",
                "cost_nanos",
                "transactions",
            ]);
            for ((id, day), (amount, cost, n)) in chunk {
                q.values_panic([
                    (*id).into(),
                    (*day).into(),
                    (*amount).into(),
                    (*cost).into(),
                    (*n).into(),
                ]);
            }
            let mut on_conflict = OnConflict::columns(["customer_id", "day"]);
            for col in ["amount_nanos", "cost_nanos", "transactions"] {
                on_conflict.value(
                    col,
                    Expr::col(("scoring_customer_days", col)).add(Expr::col(("excluded", col))),
                );
            }
            q.on_conflict(on_conflict.to_owned());
            txn.execute(&q).await.map_err(db_error)?;
        }
        let mut interactions: HashMap<&str, i32> = HashMap::new();
        for id in &batch.interactions {
            *interactions.entry(id).or_default() += 1;
        }
        for chunk in interactions.into_iter().collect::<Vec<_>>().chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("scoring_customers").columns([
                "customer_id",
                "region",
                "interactions",
                "erased",
            ]);
            for (id, n) in chunk {
                q.values_panic([(*id).into(), "".into(), (*n).into(), false.into()]);
            }
            let mut on_conflict = OnConflict::column("customer_id");
            on_conflict.value(
                "interactions",
                Expr::col(("scoring_customers", "interactions"))
                    .add(Expr::col(("excluded", "interactions"))),
            );
            q.on_conflict(on_conflict.to_owned());
            txn.execute(&q).await.map_err(db_error)?;
        }
        if !batch.erased.is_empty() {
            txn.execute(
                Query::update()
                    .table("scoring_customers")
                    .value("erased", true)
                    .and_where(Expr::col("customer_id").is_in(batch.erased.iter().cloned())),
            )
            .await
            .map_err(db_error)?;
        }
        crate::cursor::save(&txn, "scoring_feed_cursor", consumer, cursor).await?;
        txn.commit().await.map_err(db_error)
    }

    /// Every customer's purchase days: the ids (index = `Purchase::customer`)
    /// and one `Purchase` per customer and day (its sum).
    pub async fn purchase_days(&self) -> Result<(Vec<String>, Vec<Purchase>), ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["customer_id", "day", "amount_nanos", "cost_nanos"])
                    .from("scoring_customer_days")
                    .order_by("customer_id", sea_orm::Order::Asc)
                    .order_by("day", sea_orm::Order::Asc),
            )
            .await
            .map_err(db_error)?;
        let mut ids: Vec<String> = Vec::new();
        let mut purchases = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("", "customer_id").map_err(db_error)?;
            if ids.last() != Some(&id) {
                ids.push(id);
            }
            purchases.push(Purchase {
                customer: (ids.len() - 1) as u32,
                day: r.try_get("", "day").map_err(db_error)?,
                amount_nanos: r.try_get("", "amount_nanos").map_err(db_error)?,
                cost_nanos: r.try_get("", "cost_nanos").map_err(db_error)?,
            });
        }
        Ok((ids, purchases))
    }

    /// (interactions, currency) per customer id.
    pub async fn customer_facts(&self) -> Result<HashMap<String, (u32, String)>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["customer_id", "interactions", "currency"])
                    .from("scoring_customers"),
            )
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.try_get("", "customer_id").map_err(db_error)?;
                let n: i32 = r.try_get("", "interactions").map_err(db_error)?;
                let currency: String = r.try_get("", "currency").map_err(db_error)?;
                Ok((id, (u32::try_from(n).unwrap_or(0), currency)))
            })
            .collect()
    }

    /// Stores computed scores (customer id, encoded score), replacing older ones.
    pub async fn save_scores(
        &self,
        model_version: &str,
        computed_at: DateTime<Utc>,
        scores: &[(String, Vec<u8>)],
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        for chunk in scores.chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("scoring_scores").columns([
                "customer_id",
                "model_version",
                "computed_at",
                "score",
            ]);
            for (id, score) in chunk {
                q.values_panic([
                    id.as_str().into(),
                    model_version.into(),
                    computed_at.into(),
                    score.clone().into(),
                ]);
            }
            q.on_conflict(
                OnConflict::column("customer_id")
                    .update_columns(["model_version", "computed_at", "score"])
                    .to_owned(),
            );
            txn.execute(&q).await.map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)
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
                        .and_where(Expr::col("customer_id").is_in(chunk.iter().cloned())),
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
}
