//! Scoring's product rollup for the product distribution report: one row
//! per day, region, category, currency and customer (distinct customers per
//! group stay countable). Filled by its own feed consumer from sequence 0,
//! so an existing installation backfills it from the change feed.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000006_scoring_products"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("scoring_product_days")
                .col(ColumnDef::new("day").integer().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("category").string().not_null())
                .col(ColumnDef::new("currency").string().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("transactions").big_integer().not_null())
                .col(ColumnDef::new("quantity").big_integer().not_null())
                .col(ColumnDef::new("amount_nanos").big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("day"))
                        .col(Alias::new("region"))
                        .col(Alias::new("category"))
                        .col(Alias::new("currency"))
                        .col(Alias::new("customer_id")),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("scoring_product_days").to_owned())
            .await
    }
}
