//! Erasures from the profile change feed: a customer erased in profile
//! loses their comments and complaint texts here too.

use std::sync::Arc;

use patron_domain::ApiError;
use patron_proto::profile::{ChangeEvent, change_event::Change};
use patron_runtime::{
    ServiceContext,
    feed::{BoxFuture, FeedConsumer, follow},
};
use patron_store::cursor::Advance;
use patron_store::feedback::FeedbackStore;

const CONSUMER: &str = "erasures";

struct Erasures(FeedbackStore);

impl FeedConsumer for Erasures {
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>> {
        Box::pin(self.0.cursor(CONSUMER))
    }

    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        advance: Advance,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let erased: Vec<String> = events
                .into_iter()
                .filter_map(|e| match e.change {
                    Some(Change::CustomerErased(x)) => Some(x.customer_id),
                    _ => None,
                })
                .collect();
            if !erased.is_empty() {
                tracing::info!(customers = erased.len(), "applying erasures");
            }
            self.0.apply_erasures(CONSUMER, &erased, advance).await
        })
    }
}

pub(crate) fn start(ctx: &ServiceContext) {
    follow(
        ctx,
        "feedback-erasures",
        Arc::new(Erasures(FeedbackStore::new(&ctx.storage))),
    );
}
