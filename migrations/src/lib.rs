//! Schema migrations, one migrator per service.
//!
//! Each service owns its tables (prefixed with the service name) and records
//! its applied migrations in its own bookkeeping table, so services can share
//! one database (monolith) or each have their own (split mode) without
//! stepping on each other. Every schema change is a new `mYYYYMMDD_NNNNNN_*`
//! file, self-contained (no imports from entity code).

use sea_orm_migration::prelude::*;

mod m20261122_000001_profile;
mod m20261122_000002_feedback;
mod m20261122_000003_scoring;
mod m20261123_000004_scoring_revisions;
mod m20261123_000005_campaign;
mod m20261123_000006_scoring_products;
mod m20261123_000007_feedback_summary_revisions;
mod m20261123_000008_campaign_feedback;
mod m20261123_000009_scoring_feedback;
mod m20261124_000010_scoring_online;
mod m20261125_000011_campaign_change_order;
mod m20261126_000012_bytewise_ids;
mod m20261127_000013_scoring_awaiting_baseline;
mod m20261127_000014_scoring_product_channels;
mod m20261128_000015_scoring_customer_histories;
mod m20261129_000016_scoring_narrow_scores;

macro_rules! migrator {
    ($name:ident, $table:literal, [$($migration:expr),* $(,)?]) => {
        pub struct $name;

        #[async_trait::async_trait]
        impl MigratorTrait for $name {
            fn migration_table_name() -> DynIden {
                $table.into_iden()
            }

            fn migrations() -> Vec<Box<dyn MigrationTrait>> {
                vec![$(Box::new($migration)),*]
            }
        }
    };
}

migrator!(
    ProfileMigrator,
    "profile_migrations",
    [
        m20261122_000001_profile::Migration,
        m20261126_000012_bytewise_ids::Profile
    ]
);
migrator!(
    ScoringMigrator,
    "scoring_migrations",
    [
        m20261122_000003_scoring::Migration,
        m20261123_000004_scoring_revisions::Migration,
        m20261123_000006_scoring_products::Migration,
        m20261123_000009_scoring_feedback::Migration,
        m20261124_000010_scoring_online::Migration,
        m20261126_000012_bytewise_ids::Scoring,
        m20261127_000013_scoring_awaiting_baseline::Migration,
        m20261127_000014_scoring_product_channels::Migration,
        m20261128_000015_scoring_customer_histories::Migration,
        m20261129_000016_scoring_narrow_scores::Migration
    ]
);
migrator!(
    FeedbackMigrator,
    "feedback_migrations",
    [
        m20261122_000002_feedback::Migration,
        m20261123_000007_feedback_summary_revisions::Migration,
        m20261126_000012_bytewise_ids::Feedback
    ]
);
migrator!(
    CampaignMigrator,
    "campaign_migrations",
    [
        m20261123_000005_campaign::Migration,
        m20261123_000008_campaign_feedback::Migration,
        m20261125_000011_campaign_change_order::Migration,
        m20261126_000012_bytewise_ids::Campaign
    ]
);

pub use m20261129_000016_scoring_narrow_scores::SCORE_LABELS;

/// Runs `statements` as one batch on one connection (on SQLite a pool's
/// connections can disagree about the schema while it changes), all or
/// nothing: PostgreSQL runs migrations in a transaction, SQLite gets a
/// savepoint.
pub(crate) async fn run_batch(
    m: &SchemaManager<'_>,
    mut statements: Vec<String>,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::DbBackend;
    if m.get_database_backend() != DbBackend::Postgres {
        statements.insert(0, "SAVEPOINT migration_batch".to_owned());
        statements.push("RELEASE migration_batch".to_owned());
    }
    m.get_connection()
        .execute_unprepared(&statements.join(";\n"))
        .await
        .map(|_| ())
}
pub use sea_orm_migration::MigratorTrait;
