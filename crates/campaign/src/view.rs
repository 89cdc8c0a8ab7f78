//! Keeps campaign's view of customers current: attributes, consent and
//! purchases from the profile change feed, scores from scoring's score
//! stream, feedback summaries from feedback's summary stream. Every follower
//! records its position durably with the rows it writes, so a restart
//! resumes without loss.

use std::{sync::Arc, time::Duration};

use patron_domain::{
    ApiError,
    segment::{FeedbackFields, Record, ScoreFields, epoch_day},
};
use patron_proto::{
    profile::{self, ChangeEvent, change_event::Change},
    scoring as spb,
};
use patron_runtime::peers::PeerChannel as Channel;
use patron_runtime::{
    ServiceContext, ServiceKind,
    convert::date,
    feed::{BoxFuture, FeedConsumer, every, follow, pull_feedback_summaries, pull_scores},
};
use patron_store::campaign::{CampaignStore, CustomerChange, FeedChange};
use patron_store::cursor::Advance;

const FEED_CONSUMER: &str = "profile-feed";
const SCORE_CONSUMER: &str = "scores";
const FEEDBACK_CONSUMER: &str = "feedback-summaries";

/// The lower-case name of a proto enum value without its type prefix
/// (`CHURN_RISK_HIGH` -> `high`); "" for UNSPECIFIED or unknown values.
pub(crate) fn label(name: Option<&str>, prefix: &str) -> String {
    match name.and_then(|n| n.strip_prefix(prefix)) {
        Some("UNSPECIFIED") | None => String::new(),
        Some(rest) => rest.to_ascii_lowercase(),
    }
}

fn units(m: Option<&patron_proto::common::Money>) -> f64 {
    m.map_or(0.0, |m| m.units as f64 + f64::from(m.nanos) / 1e9)
}

fn customer_change(c: profile::Customer) -> CustomerChange {
    let day =
        |d: Option<&patron_proto::google::r#type::Date>| date(d, "").ok().flatten().map(epoch_day);
    let consent = c.marketing_consent.unwrap_or_default();
    CustomerChange {
        record: Record {
            birth_day: day(c.birth_date.as_ref()),
            relationship_start_day: day(c.relationship_start_date.as_ref()),
            gender: label(
                profile::Gender::try_from(c.gender)
                    .ok()
                    .map(|g| g.as_str_name()),
                "GENDER_",
            ),
            income_band: label(
                profile::IncomeBand::try_from(c.income_band)
                    .ok()
                    .map(|g| g.as_str_name()),
                "INCOME_BAND_",
            ),
            customer_id: c.id,
            external_id: c.external_id,
            region: c.region,
            city: c.city,
            occupation: c.occupation,
            tags: c.tags,
            consent: [
                consent.email,
                consent.sms,
                consent.phone,
                consent.push,
                consent.post,
            ],
            ..Record::default()
        },
        display_name: c.display_name,
        email: c.email,
        phone: c.phone,
        erased: c.erase_time.is_some(),
    }
}

/// The fields a segment rule reads from a score.
pub(crate) fn score_fields(s: &spb::CustomerScore) -> ScoreFields {
    let rfm = s.rfm.clone().unwrap_or_default();
    let clv = s.clv.clone().unwrap_or_default();
    let churn = s.churn.clone().unwrap_or_default();
    ScoreFields {
        rfm_segment: rfm.segment,
        r: rfm.r_score.into(),
        f: rfm.f_score.into(),
        m: rfm.m_score.into(),
        recency_days: rfm.recency_days as f64,
        frequency: rfm.frequency as f64,
        monetary: units(rfm.monetary.as_ref()),
        weighted_score: rfm.weighted_score,
        historical_value: units(clv.historical_value.as_ref()),
        simple_clv: units(clv.simple_clv.as_ref()),
        predicted_clv_365d: units(clv.predicted_clv_365d.as_ref()),
        expected_purchases_365d: clv.expected_purchases_365d,
        p_alive: clv.p_alive,
        churn_probability: churn.probability,
        churn_risk: label(
            spb::ChurnRisk::try_from(churn.risk)
                .ok()
                .map(|v| v.as_str_name()),
            "CHURN_RISK_",
        ),
        value_tier: label(
            spb::ValueTier::try_from(s.value_tier)
                .ok()
                .map(|v| v.as_str_name()),
            "VALUE_TIER_",
        ),
        value_quadrant: label(
            spb::ValueQuadrant::try_from(s.value_quadrant)
                .ok()
                .map(|v| v.as_str_name()),
            "VALUE_QUADRANT_",
        ),
        lifecycle_stage: label(
            spb::LifecycleStage::try_from(s.lifecycle_stage)
                .ok()
                .map(|v| v.as_str_name()),
            "LIFECYCLE_STAGE_",
        ),
        loyalty_index: s.loyalty_index,
        margin: units(s.profitability.as_ref().and_then(|p| p.margin.as_ref())),
    }
}

struct ProfileFeed(CampaignStore);

impl FeedConsumer for ProfileFeed {
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>> {
        Box::pin(self.0.cursor(FEED_CONSUMER))
    }

    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        advance: Advance,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let changes = events
            .into_iter()
            .filter_map(|e| match e.change? {
                Change::Customer(c) => Some(FeedChange::Customer(Box::new(customer_change(c)))),
                Change::Transaction(t) => {
                    let day = t
                        .occurred_at
                        .map_or(0, |ts| ts.seconds.div_euclid(86_400) as i32);
                    Some(FeedChange::Purchase(t.customer_id, day, t.category))
                }
                Change::CustomerErased(e) => Some(FeedChange::Erased(e.customer_id)),
                Change::Event(_) | Change::Interaction(_) => None,
            })
            .collect();
        Box::pin(self.0.apply_feed(FEED_CONSUMER, changes, advance))
    }
}

/// Pulls the scores saved since the last sync, once.
async fn sync_scores(store: &CampaignStore, channel: &Channel) -> Result<(), String> {
    let after = store
        .cursor(SCORE_CONSUMER)
        .await
        .map_err(|e| e.to_string())?;
    pull_scores(
        channel,
        after,
        |s| (s.customer_id.clone(), score_fields(&s)),
        |rows: Vec<(String, ScoreFields)>, advance| async move {
            store.apply_scores(SCORE_CONSUMER, &rows, advance).await
        },
    )
    .await
}

/// Pulls the feedback summaries changed since the last sync, once.
async fn sync_feedback(store: &CampaignStore, channel: &Channel) -> Result<(), String> {
    let after = store
        .cursor(FEEDBACK_CONSUMER)
        .await
        .map_err(|e| e.to_string())?;
    pull_feedback_summaries(
        channel,
        after,
        |s| {
            let fields = FeedbackFields {
                latest_nps: s.latest_nps,
                csat_mean: s.csat_mean,
                open_complaints: s.open_complaints,
            };
            (s.customer_id, fields)
        },
        |rows: Vec<(String, FeedbackFields)>, advance| async move {
            store
                .apply_feedback(FEEDBACK_CONSUMER, &rows, advance)
                .await
        },
    )
    .await
}

pub(crate) fn start(ctx: &ServiceContext) {
    let store = CampaignStore::new(&ctx.storage);
    let interval = Duration::from_millis(ctx.settings.campaign.score_sync_interval_ms);
    follow(ctx, "campaign-view", Arc::new(ProfileFeed(store.clone())));
    match ctx.peers.channel(ServiceKind::Scoring) {
        Some(channel) => {
            let store = store.clone();
            every(ctx, "score sync", interval, move || {
                let (store, channel) = (store.clone(), channel.clone());
                async move { sync_scores(&store, &channel).await }
            });
        }
        None => tracing::error!("no scoring peer: segment rules will see no scores"),
    }
    match ctx.peers.channel(ServiceKind::Feedback) {
        Some(channel) => every(ctx, "feedback sync", interval, move || {
            let (store, channel) = (store.clone(), channel.clone());
            async move { sync_feedback(&store, &channel).await }
        }),
        None => tracing::error!("no feedback peer: segment rules will see no feedback"),
    }
}
