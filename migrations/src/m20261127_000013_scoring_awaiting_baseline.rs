//! `scoring_awaiting_baseline`: customers whose data changed while online
//! scoring had no baseline to score them against (before the first
//! recompute saved one), with the feed position of that change.
//!
//! The first recompute reads the read model as of one feed position and
//! saves its baseline at the end; a purchase applied in between changes a
//! customer that recompute already scored from older data, and online
//! scoring, without a baseline yet, could not rescore it. The feed consumer
//! records such customers in the same transaction as the change, and the
//! first recompute rescores those whose change it did not read. Once a
//! baseline exists nothing is written here.

use sea_orm_migration::prelude::*;

use crate::m20261126_000012_bytewise_ids::collate;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000013_scoring_awaiting_baseline"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("scoring_awaiting_baseline")
                .col(
                    ColumnDef::new("customer_id")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                // The feed position of the customer's latest such change.
                .col(ColumnDef::new("data_seq").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        // Ids compare bytewise (PostgreSQL only).
        collate(m, &[("scoring_awaiting_baseline", &["customer_id"])], "C").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("scoring_awaiting_baseline").to_owned())
            .await
    }
}
