//! The feedback summary in campaign's view (from feedback's summary
//! stream): latest NPS answer, mean CSAT, open complaints.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000008_campaign_feedback"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        for column in [
            ColumnDef::new("latest_nps").integer().null().to_owned(),
            ColumnDef::new("csat_mean").double().null().to_owned(),
            ColumnDef::new("open_complaints")
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table("campaign_customers")
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["latest_nps", "csat_mean", "open_complaints"] {
            m.alter_table(
                Table::alter()
                    .table("campaign_customers")
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
