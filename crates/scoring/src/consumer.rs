//! Keeps scoring's read model (customers, purchase days, interaction
//! counts, erasures) up to date from the profile change feed.

use std::{sync::Arc, time::Duration};

use patron_domain::ApiError;
use patron_proto::profile::{ChangeEvent, change_event::Change};
use patron_runtime::peers::PeerChannel as Channel;
use patron_runtime::{
    ServiceContext, ServiceKind,
    feed::{BoxFuture, FeedConsumer, every, follow, pull_feedback_summaries},
};
use patron_store::cursor::Advance;
use patron_store::scoring::{FeedbackSignals, ProductRow, ReadModelBatch, ScoringStore};

use crate::scores::OnlineScorer;

/// The read model's cursor name; its position is the data a score reflects.
pub(crate) const READ_MODEL: &str = "read-model";

struct ReadModel {
    store: ScoringStore,
    online: OnlineScorer,
}

fn nanos(m: Option<&patron_proto::common::Money>) -> i64 {
    m.map_or(0, |m| {
        m.units
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(m.nanos))
    })
}

impl FeedConsumer for ReadModel {
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>> {
        Box::pin(self.store.cursor(READ_MODEL))
    }

    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        advance: Advance,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let mut batch = ReadModelBatch::default();
        // Customers created in this batch: prospects to score online (a
        // profile update changes nothing a score is made of).
        let mut created = Vec::new();
        for event in events {
            match event.change {
                Some(Change::Customer(c)) => {
                    if c.create_time == c.update_time {
                        created.push(c.id.clone());
                    }
                    batch.customers.push((c.id, c.region));
                }
                Some(Change::Transaction(t)) => {
                    let day = t.occurred_at.map_or(0, |ts| ts.seconds.div_euclid(86_400)) as i32;
                    let currency = t
                        .amount
                        .as_ref()
                        .map(|m| m.currency_code.clone())
                        .unwrap_or_default();
                    batch.purchases.push((
                        t.customer_id,
                        day,
                        nanos(t.amount.as_ref()),
                        nanos(t.cost.as_ref()),
                        currency,
                    ));
                }
                Some(Change::Interaction(i)) => batch.interactions.push(i.customer_id),
                Some(Change::CustomerErased(e)) => batch.erased.push(e.customer_id),
                Some(Change::Event(_)) | None => {}
            }
        }
        let mut buyers: Vec<String> = batch.purchases.iter().map(|p| p.0.clone()).collect();
        buyers.sort_unstable();
        buyers.dedup();
        created.sort_unstable();
        created.dedup();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let purchases = batch.purchases.len();
            // Before the first recompute saves a baseline, online scoring
            // can score nobody: the batch records whom it changes, for that
            // recompute to rescore (`score_the_first_recomputes_latecomers`).
            // The rescore below looks again after the commit, so each of
            // them is either recorded before the baseline or rescored here.
            if !self.online.has_baseline().await? {
                batch.awaiting_baseline = buyers.iter().chain(&created).cloned().collect();
            }
            self.store.apply(READ_MODEL, batch, advance).await?;
            let applied = started.elapsed();
            // The batch is committed; rescoring its buyers is best effort
            // (a failure leaves their scores as the last recompute made them).
            let rescored = match self.online.rescore(buyers, created, advance.to).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "online scoring failed; scores wait for the next recompute");
                    0
                }
            };
            tracing::debug!(
                to = advance.to,
                purchases,
                rescored,
                apply_ms = applied.as_millis() as u64,
                rescore_ms = (started.elapsed() - applied).as_millis() as u64,
                "read model batch applied"
            );
            Ok(())
        })
    }
}

/// The product rollup has its own cursor, so it backfills from the start of
/// the feed on installations that predate it.
const PRODUCTS: &str = "product-rollup";

struct ProductRollup(ScoringStore);

impl FeedConsumer for ProductRollup {
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>> {
        Box::pin(self.0.cursor(PRODUCTS))
    }

    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        advance: Advance,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let rows: Vec<ProductRow> = events
            .into_iter()
            .filter_map(|e| match e.change? {
                Change::Transaction(t) => Some(ProductRow {
                    day: t.occurred_at.map_or(0, |ts| ts.seconds.div_euclid(86_400)) as i32,
                    currency: t
                        .amount
                        .as_ref()
                        .map(|m| m.currency_code.clone())
                        .unwrap_or_default(),
                    amount_nanos: nanos(t.amount.as_ref()),
                    region: t.region,
                    category: t.category,
                    channel: t.channel,
                    customer_id: t.customer_id,
                    transactions: 1,
                    quantity: i64::from(t.quantity.max(1)),
                }),
                _ => None,
            })
            .collect();
        Box::pin(async move { self.0.apply_products(PRODUCTS, &rows, advance).await })
    }
}

const FEEDBACK: &str = "feedback-summaries";

/// Pulls the feedback summaries changed since the last sync, once: the
/// signals behind the DETRACTOR and OPEN_COMPLAINT churn reasons.
async fn sync_feedback(store: &ScoringStore, channel: &Channel) -> Result<(), String> {
    let after = store.cursor(FEEDBACK).await.map_err(|e| e.to_string())?;
    pull_feedback_summaries(
        channel,
        after,
        |s| {
            let signals = FeedbackSignals {
                latest_nps: s.latest_nps,
                oldest_open_complaint_day: s
                    .oldest_open_complaint_time
                    .map(|t| t.seconds.div_euclid(86_400) as i32),
                complaints: i32::try_from(s.total_complaints).unwrap_or(i32::MAX),
            };
            (s.customer_id, signals)
        },
        |rows: Vec<(String, FeedbackSignals)>, advance| async move {
            store.apply_feedback(FEEDBACK, &rows, advance).await
        },
    )
    .await
}

pub(crate) fn start(ctx: &ServiceContext) {
    let store = ScoringStore::new(&ctx.storage);
    follow(
        ctx,
        "scoring-read-model",
        Arc::new(ReadModel {
            store: store.clone(),
            online: OnlineScorer::new(store.clone(), ctx.cache.clone()),
        }),
    );
    follow(
        ctx,
        "scoring-product-rollup",
        Arc::new(ProductRollup(store.clone())),
    );
    match ctx.peers.channel(ServiceKind::Feedback) {
        Some(channel) => every(ctx, "feedback sync", Duration::from_secs(1), move || {
            let (store, channel) = (store.clone(), channel.clone());
            async move { sync_feedback(&store, &channel).await }
        }),
        None => tracing::error!("no feedback peer: churn reasons will not use feedback"),
    }
}
