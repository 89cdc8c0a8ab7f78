//! Scoring's read model (fed by the profile change feed) and fitted models.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_scoring"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row per customer and purchase day: exactly the purchase
        // occasions the models need, kept up to date from the feed.
        m.create_table(
            Table::create()
                .table("scoring_customer_days")
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
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("scoring_customers")
                .col(
                    ColumnDef::new("customer_id")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("interactions").integer().not_null())
                .col(ColumnDef::new("erased").boolean().not_null())
                // Currency of the customer's purchases (the latest seen).
                .col(ColumnDef::new("currency").string().not_null().default(""))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("scoring_feed_cursor")
                .col(ColumnDef::new("consumer").string().not_null().primary_key())
                .col(ColumnDef::new("after_sequence").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        // The latest computed score per customer (the encoded CustomerScore).
        m.create_table(
            Table::create()
                .table("scoring_scores")
                .col(
                    ColumnDef::new("customer_id")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("model_version").string().not_null())
                .col(
                    ColumnDef::new("computed_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                // Labels beside the encoded score, for distributions.
                .col(ColumnDef::new("segment").string().not_null())
                .col(ColumnDef::new("value_tier").string().not_null())
                .col(ColumnDef::new("value_quadrant").string().not_null())
                .col(ColumnDef::new("churn_risk").string().not_null())
                .col(ColumnDef::new("lifecycle_stage").string().not_null())
                .col(ColumnDef::new("score").blob().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("scoring_models")
                .col(
                    ColumnDef::new("model_version")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                // The encoded ModelFit, as returned by FitModel.
                .col(ColumnDef::new("fit").blob().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "scoring_models",
            "scoring_feed_cursor",
            "scoring_customers",
            "scoring_customer_days",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
