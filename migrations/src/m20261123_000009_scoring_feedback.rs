//! Feedback signals in scoring's read model (from feedback's summary
//! stream): the latest NPS answer, the filing day of the oldest open
//! complaint and the number of complaints, for churn reasons and the cost
//! to serve.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000009_scoring_feedback"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        for column in [
            ColumnDef::new("latest_nps").integer().null().to_owned(),
            ColumnDef::new("oldest_open_complaint_day")
                .integer()
                .null()
                .to_owned(),
            ColumnDef::new("complaints")
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table("scoring_customers")
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["latest_nps", "oldest_open_complaint_day", "complaints"] {
            m.alter_table(
                Table::alter()
                    .table("scoring_customers")
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
