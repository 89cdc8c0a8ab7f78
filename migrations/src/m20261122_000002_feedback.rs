//! Feedback: survey responses, complaints, idempotency keys, and the cursor
//! of the profile change-feed consumer (for erasures).

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_feedback"
    }
}

fn index(name: &str, table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(Alias::new(table));
    for c in cols {
        idx.col(Alias::new(*c));
    }
    idx.to_owned()
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("feedback_responses")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("kind").string().not_null())
                .col(ColumnDef::new("score").integer().not_null())
                .col(ColumnDef::new("comment").text().not_null())
                .col(ColumnDef::new("product_id").string().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("channel").string().not_null())
                .col(
                    ColumnDef::new("occurred_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "feedback_responses_kind_time",
            "feedback_responses",
            &["kind", "occurred_at"],
        ))
        .await?;
        m.create_index(index(
            "feedback_responses_customer",
            "feedback_responses",
            &["customer_id", "occurred_at"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("feedback_complaints")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("type").string().not_null())
                .col(ColumnDef::new("product_id").string().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("channel").string().not_null())
                .col(ColumnDef::new("assignee").string().not_null())
                .col(ColumnDef::new("severity").string().not_null())
                .col(ColumnDef::new("status").string().not_null())
                .col(ColumnDef::new("description").text().not_null())
                .col(ColumnDef::new("resolution").text().not_null())
                .col(
                    ColumnDef::new("filed_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("first_response_time")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new("resolved_time")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new("update_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("version").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "feedback_complaints_filed",
            "feedback_complaints",
            &["filed_time", "id"],
        ))
        .await?;
        m.create_index(index(
            "feedback_complaints_customer",
            "feedback_complaints",
            &["customer_id", "status"],
        ))
        .await?;
        m.create_index(index(
            "feedback_complaints_status",
            "feedback_complaints",
            &["status", "filed_time"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("feedback_requests")
                .col(
                    ColumnDef::new("request_key")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("resource_id").string().not_null())
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        // Daily rollup of responses, written in the same transaction as the
        // responses: reports read whole days here and only the partial days
        // at the edges of a window from the raw rows.
        m.create_table(
            Table::create()
                .table("feedback_daily")
                .col(ColumnDef::new("day").date().not_null())
                .col(ColumnDef::new("kind").string().not_null())
                .col(ColumnDef::new("product_id").string().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("channel").string().not_null())
                .col(ColumnDef::new("promoters").big_integer().not_null())
                .col(ColumnDef::new("passives").big_integer().not_null())
                .col(ColumnDef::new("detractors").big_integer().not_null())
                .col(ColumnDef::new("satisfied").big_integer().not_null())
                .col(ColumnDef::new("responses").big_integer().not_null())
                .col(ColumnDef::new("score_sum").big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("day"))
                        .col(Alias::new("kind"))
                        .col(Alias::new("product_id"))
                        .col(Alias::new("region"))
                        .col(Alias::new("channel")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("feedback_feed_cursor")
                .col(ColumnDef::new("consumer").string().not_null().primary_key())
                .col(ColumnDef::new("after_sequence").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "feedback_feed_cursor",
            "feedback_requests",
            "feedback_complaints",
            "feedback_responses",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
