//! Campaign's view read in change order.
//!
//! The mirror and the segment watcher read the rows changed since a revision
//! page by page in (revision, customer_id) order. An index on revision alone
//! cannot give that order, so the planner walked the primary key instead and
//! read the whole view to find a handful of changed rows (or none).

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000011_campaign_change_order"
    }
}

const OLD: &str = "campaign_customers_by_revision";
const NEW: &str = "campaign_customers_by_revision_id";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(NEW)
                .table("campaign_customers")
                .col(Alias::new("revision"))
                .col(Alias::new("customer_id"))
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name(OLD)
                .table("campaign_customers")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(OLD)
                .table("campaign_customers")
                .col(Alias::new("revision"))
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name(NEW)
                .table("campaign_customers")
                .to_owned(),
        )
        .await
    }
}
