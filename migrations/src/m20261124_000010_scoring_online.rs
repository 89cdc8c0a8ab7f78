//! Online scoring between recomputes.
//!
//! `scoring_scores.data_seq`: the position in profile's change feed whose
//! data a score reflects, so a recompute that read the read model before an
//! online update cannot overwrite that update with older figures.
//! `scoring_baselines`: what each recompute knew of the whole population
//! (rank cuts, tier cuts, medians, the one-time-buyer rule) and the model it
//! used, as JSON, so a single customer can be scored against it later.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000010_scoring_online"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("scoring_scores")
                .add_column(
                    ColumnDef::new("data_seq")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("scoring_baselines")
                // The recompute's computed_at in microseconds: newest last.
                .col(ColumnDef::new("id").big_integer().not_null().primary_key())
                .col(ColumnDef::new("model_version").string().not_null())
                .col(
                    ColumnDef::new("computed_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("data_seq").big_integer().not_null())
                .col(ColumnDef::new("baseline").text().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("scoring_baselines").to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table("scoring_scores")
                .drop_column("data_seq")
                .to_owned(),
        )
        .await
    }
}
