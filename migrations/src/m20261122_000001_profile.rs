//! Profile: customers, idempotency keys, transactions, events, interactions,
//! the change-feed outbox and the erasure audit log.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_profile"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("profile_customers")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(
                    ColumnDef::new("external_id")
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new("display_name").string().not_null())
                .col(ColumnDef::new("email").string().not_null())
                .col(ColumnDef::new("phone").string().not_null())
                .col(ColumnDef::new("birth_date").date().null())
                .col(ColumnDef::new("gender").string().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(ColumnDef::new("city").string().not_null())
                .col(ColumnDef::new("occupation").string().not_null())
                .col(ColumnDef::new("income_band").string().not_null())
                // "|a|b|": delimited so `tags:"vip"` is a plain LIKE on every backend.
                .col(ColumnDef::new("tags").string().not_null())
                .col(ColumnDef::new("attributes").text().not_null())
                .col(ColumnDef::new("consent_email").boolean().not_null())
                .col(ColumnDef::new("consent_sms").boolean().not_null())
                .col(ColumnDef::new("consent_phone").boolean().not_null())
                .col(ColumnDef::new("consent_push").boolean().not_null())
                .col(ColumnDef::new("consent_post").boolean().not_null())
                .col(ColumnDef::new("relationship_start_date").date().null())
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("update_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("version").big_integer().not_null())
                .col(
                    ColumnDef::new("erase_time")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("profile_customers_create_time", &["create_time", "id"][..]),
            ("profile_customers_region", &["region", "id"][..]),
        ] {
            let mut idx = Index::create();
            idx.name(name).table("profile_customers");
            for c in cols {
                idx.col(*c);
            }
            m.create_index(idx.to_owned()).await?;
        }

        // Idempotency keys of mutating calls that take a `request_id` (AIP-155).
        m.create_table(
            Table::create()
                .table("profile_requests")
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

        // Activity rows reference customers, which are never deleted (erasure
        // keeps the row). The writing transaction checks every reference, so
        // there is no foreign key: it would cost an index probe per row on
        // the ingestion hot path and add nothing.
        m.create_table(
            Table::create()
                .table("profile_transactions")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(
                    ColumnDef::new("occurred_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("currency").string_len(3).not_null())
                .col(ColumnDef::new("amount_nanos").big_integer().not_null())
                .col(ColumnDef::new("cost_nanos").big_integer().null())
                .col(ColumnDef::new("channel").string().not_null())
                .col(ColumnDef::new("product_id").string().not_null())
                .col(ColumnDef::new("category").string().not_null())
                .col(ColumnDef::new("quantity").integer().not_null())
                .col(ColumnDef::new("region").string().not_null())
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("profile_transactions_customer")
                .table("profile_transactions")
                .col("customer_id")
                .col("occurred_at")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("profile_events")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("kind").string().not_null())
                .col(
                    ColumnDef::new("occurred_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("properties").text().not_null())
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("profile_events_customer")
                .table("profile_events")
                .col("customer_id")
                .col("occurred_at")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("profile_interactions")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("kind").string().not_null())
                .col(
                    ColumnDef::new("occurred_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("rep").string().not_null())
                .col(ColumnDef::new("outcome").string().not_null())
                .col(ColumnDef::new("notes").text().not_null())
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("profile_interactions_customer")
                .table("profile_interactions")
                .col("customer_id")
                .col("occurred_at")
                .to_owned(),
        )
        .await?;

        // The change feed. Sequences are handed out from the single counter row
        // below inside the writing transaction: the row lock makes commits
        // happen in sequence order, so a reader never sees sequence n+1 before n
        // (no gaps to wait for, no skipped late commits).
        m.create_table(
            Table::create()
                .table("profile_feed_head")
                .col(ColumnDef::new("id").integer().not_null().primary_key())
                .col(ColumnDef::new("last_sequence").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table("profile_feed_head")
                .columns(["id", "last_sequence"])
                .values_panic([1.into(), 0i64.into()])
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("profile_changes")
                .col(
                    ColumnDef::new("sequence")
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new("commit_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("kind").string().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                // The encoded `ChangeEvent.change` (protobuf), written by the service.
                .col(ColumnDef::new("payload").blob().not_null())
                .to_owned(),
        )
        .await?;

        // Who was erased, when and why; no personal data.
        m.create_table(
            Table::create()
                .table("profile_erasures")
                .col(
                    ColumnDef::new("customer_id")
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new("erase_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new("reason").string().not_null())
                .col(ColumnDef::new("sequence").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "profile_erasures",
            "profile_changes",
            "profile_feed_head",
            "profile_interactions",
            "profile_events",
            "profile_transactions",
            "profile_requests",
            "profile_customers",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
