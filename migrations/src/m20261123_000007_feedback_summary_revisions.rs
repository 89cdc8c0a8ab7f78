//! Summary revisions: every write that changes a customer's feedback
//! summary (a response, a filed or updated complaint) stamps the customer
//! with the next revision from a counter row held until commit, so
//! `StreamCustomerSummaries(after_revision)` hands other services (campaign)
//! every changed summary without gaps. Existing customers get revision 1.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000007_feedback_summary_revisions"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("feedback_summary_revisions")
                .col(
                    ColumnDef::new("customer_id")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("revision").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("feedback_summary_revisions_by_revision")
                .table("feedback_summary_revisions")
                .col(Alias::new("revision"))
                .col(Alias::new("customer_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("feedback_summary_head")
                .col(ColumnDef::new("id").integer().not_null().primary_key())
                .col(ColumnDef::new("last_revision").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.get_connection()
            .execute_unprepared(
                "INSERT INTO feedback_summary_revisions (customer_id, revision) \
                 SELECT customer_id, 1 FROM feedback_responses \
                 UNION SELECT customer_id, 1 FROM feedback_complaints",
            )
            .await?;
        m.exec_stmt(
            Query::insert()
                .into_table("feedback_summary_head")
                .columns(["id", "last_revision"])
                .values_panic([1.into(), 1.into()])
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["feedback_summary_head", "feedback_summary_revisions"] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
