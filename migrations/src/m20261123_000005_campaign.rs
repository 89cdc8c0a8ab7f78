//! Campaign's tables: its view of customers (attributes and purchases from
//! the profile change feed, scores from scoring's score stream), segments
//! with their live membership and history, campaigns with their frozen
//! audiences, and responses.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000005_campaign"
    }
}

fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .string()
        .not_null()
        .default("")
        .to_owned()
}

fn day(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).integer().null().to_owned()
}

fn flag(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}

fn number(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).double().null().to_owned()
}

fn label(name: &'static str) -> ColumnDef {
    ColumnDef::new(name).string().null().to_owned()
}

const SCORE_NUMBERS: [&str; 15] = [
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary",
    "rfm_weighted_score",
    "clv_historical_value",
    "clv_simple",
    "clv_predicted_365d",
    "clv_expected_purchases_365d",
    "clv_p_alive",
    "churn_probability",
    "loyalty_index",
    "profit_margin",
];

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row per customer: everything a segment rule can read. Tags and
        // categories are stored as "|a|b|" so a membership test is one LIKE.
        let mut customers = Table::create();
        customers
            .table("campaign_customers")
            .col(
                ColumnDef::new("customer_id")
                    .string()
                    .not_null()
                    .primary_key(),
            )
            .col(text("external_id"))
            .col(text("display_name"))
            .col(text("email"))
            .col(text("phone"))
            .col(text("region"))
            .col(text("city"))
            .col(text("occupation"))
            .col(text("gender"))
            .col(text("income_band"))
            .col(day("birth_day"))
            .col(day("relationship_start_day"))
            .col(text("tags"))
            .col(text("categories"))
            .col(flag("consent_email"))
            .col(flag("consent_sms"))
            .col(flag("consent_phone"))
            .col(flag("consent_push"))
            .col(flag("consent_post"))
            .col(
                ColumnDef::new("purchases")
                    .big_integer()
                    .not_null()
                    .default(0),
            )
            .col(day("first_purchase_day"))
            .col(day("last_purchase_day"))
            // Erased customers keep a row (all personal data cleared) so the
            // segment watcher can report them as LEFT.
            .col(flag("erased"))
            // Whether the customer had a profile record (not only scores).
            .col(flag("known"))
            .col(label("rfm_segment"))
            .col(label("churn_risk"))
            .col(label("value_tier"))
            .col(label("value_quadrant"))
            .col(label("lifecycle_stage"));
        for n in SCORE_NUMBERS {
            customers.col(number(n));
        }
        // The view revision of the last change to the row.
        customers.col(ColumnDef::new("revision").big_integer().not_null());
        m.create_table(customers.to_owned()).await?;
        m.create_index(
            Index::create()
                .name("campaign_customers_by_revision")
                .table("campaign_customers")
                .col(Alias::new("revision"))
                .to_owned(),
        )
        .await?;
        // The view's revision counter (one row, locked by every writer until
        // commit, so revisions are gap-free in commit order).
        m.create_table(
            Table::create()
                .table("campaign_view_head")
                .col(ColumnDef::new("id").integer().not_null().primary_key())
                .col(ColumnDef::new("last_revision").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table("campaign_view_head")
                .columns(["id", "last_revision"])
                .values_panic([1.into(), 0.into()])
                .to_owned(),
        )
        .await?;
        // Positions in the profile change feed and in scoring's score stream.
        m.create_table(
            Table::create()
                .table("campaign_feed_cursor")
                .col(ColumnDef::new("consumer").string().not_null().primary_key())
                .col(ColumnDef::new("after_sequence").big_integer().not_null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("campaign_segments")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(text("display_name"))
                .col(ColumnDef::new("expression").text().not_null())
                .col(ColumnDef::new("description").text().not_null())
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
                // Membership bookkeeping of the watcher: the view revision and
                // the day (for date helpers) the membership reflects, the
                // current member count and the last change number.
                .col(
                    ColumnDef::new("evaluated_revision")
                        .big_integer()
                        .not_null()
                        .default(-1),
                )
                .col(
                    ColumnDef::new("evaluated_day")
                        .integer()
                        .not_null()
                        .default(-1),
                )
                .col(
                    ColumnDef::new("evaluated_version")
                        .big_integer()
                        .not_null()
                        .default(-1),
                )
                .col(
                    ColumnDef::new("members")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(
                    ColumnDef::new("last_change")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("campaign_segment_members")
                .col(ColumnDef::new("segment_id").string().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("segment_id"))
                        .col(Alias::new("customer_id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("campaign_segment_changes")
                .col(ColumnDef::new("segment_id").string().not_null())
                .col(ColumnDef::new("change").big_integer().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("entered").boolean().not_null())
                .col(
                    ColumnDef::new("change_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(Alias::new("segment_id"))
                        .col(Alias::new("change")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("campaign_segment_counts")
                .col(ColumnDef::new("segment_id").string().not_null())
                .col(ColumnDef::new("time").timestamp_with_time_zone().not_null())
                .col(ColumnDef::new("members").big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("segment_id"))
                        .col(Alias::new("time")),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("campaign_campaigns")
                .col(ColumnDef::new("id").string().not_null().primary_key())
                .col(text("display_name"))
                .col(ColumnDef::new("kind").integer().not_null())
                .col(ColumnDef::new("segment_id").string().not_null())
                .col(ColumnDef::new("channel").string().not_null())
                .col(ColumnDef::new("control_fraction").double().not_null())
                .col(ColumnDef::new("state").integer().not_null())
                .col(
                    ColumnDef::new("treatment_size")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(
                    ColumnDef::new("control_size")
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(
                    ColumnDef::new("create_time")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new("launch_time")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new("complete_time")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(ColumnDef::new("version").big_integer().not_null())
                .col(ColumnDef::new("request_id").string().null().unique_key())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("campaign_audience")
                .col(ColumnDef::new("campaign_id").string().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("arm").integer().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("campaign_id"))
                        .col(Alias::new("customer_id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("campaign_responses")
                .col(ColumnDef::new("campaign_id").string().not_null())
                .col(ColumnDef::new("response_id").string().not_null())
                .col(ColumnDef::new("customer_id").string().not_null())
                .col(ColumnDef::new("kind").integer().not_null())
                .col(ColumnDef::new("revenue_nanos").big_integer().not_null())
                .col(text("currency"))
                .col(
                    ColumnDef::new("occurred_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(Alias::new("campaign_id"))
                        .col(Alias::new("response_id")),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "campaign_responses",
            "campaign_audience",
            "campaign_campaigns",
            "campaign_segment_counts",
            "campaign_segment_changes",
            "campaign_segment_members",
            "campaign_segments",
            "campaign_feed_cursor",
            "campaign_view_head",
            "campaign_customers",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
