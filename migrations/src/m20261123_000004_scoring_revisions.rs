//! Score revisions: every save of scores takes the next revision from a
//! counter row (held locked until commit), so `StreamScores(after_revision)`
//! hands consumers such as campaign every changed score, in commit order,
//! without gaps.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000004_scoring_revisions"
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
                    ColumnDef::new("revision")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("scoring_scores_by_revision")
                .table("scoring_scores")
                .col(Alias::new("revision"))
                .col(Alias::new("customer_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("scoring_score_head")
                .col(ColumnDef::new("id").integer().not_null().primary_key())
                .col(ColumnDef::new("last_revision").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table("scoring_score_head")
                .columns(["id", "last_revision"])
                .values_panic([1.into(), 0.into()])
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("scoring_score_head").to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("scoring_scores_by_revision")
                .table("scoring_scores")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("scoring_scores")
                .drop_column("revision")
                .to_owned(),
        )
        .await
    }
}
