//! Keeps scoring's read model (customers, purchase days, interaction
//! counts, erasures) up to date from the profile change feed.

use std::sync::Arc;

use patron_domain::ApiError;
use patron_proto::profile::{ChangeEvent, change_event::Change};
use patron_runtime::{
    ServiceContext,
    feed::{BoxFuture, FeedConsumer, follow},
};
use patron_store::scoring::{ReadModelBatch, ScoringStore};

const CONSUMER: &str = "read-model";

struct ReadModel(ScoringStore);

fn nanos(m: Option<&patron_proto::common::Money>) -> i64 {
    m.map_or(0, |m| {
        m.units
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(m.nanos))
    })
}

impl FeedConsumer for ReadModel {
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>> {
        Box::pin(self.0.cursor(CONSUMER))
    }

    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        last_sequence: i64,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let mut batch = ReadModelBatch::default();
        for event in events {
            match event.change {
                Some(Change::Customer(c)) => batch.customers.push((c.id, c.region)),
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
        Box::pin(self.0.apply(CONSUMER, batch, last_sequence))
    }
}

pub(crate) fn start(ctx: &ServiceContext) {
    follow(
        ctx,
        "scoring-read-model",
        Arc::new(ReadModel(ScoringStore::new(&ctx.storage))),
    );
}
