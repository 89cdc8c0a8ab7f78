//! Consumes the profile change feed for erasures: a customer erased in
//! profile loses their comments and complaint texts here too. The cursor is
//! stored in the same transaction as the effect, so a restart resumes
//! without loss or repetition.

use std::time::Duration;

use futures::StreamExt;
use patron_proto::profile::{
    StreamChangesRequest, change_event::Change,
    customer_profile_service_client::CustomerProfileServiceClient,
};
use patron_runtime::{ServiceContext, ServiceKind};
use patron_store::feedback::FeedbackStore;

const CONSUMER: &str = "erasures";

pub(crate) fn start(ctx: &ServiceContext) {
    let Some(channel) = ctx.peers.channel(ServiceKind::Profile) else {
        tracing::error!("no profile peer: erasures will not reach feedback");
        return;
    };
    let store = FeedbackStore::new(&ctx.storage);
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let run = consume(&store, CustomerProfileServiceClient::new(channel.clone()));
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = run => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "profile feed consumer stopped");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

async fn consume(
    store: &FeedbackStore,
    mut client: CustomerProfileServiceClient<tonic::transport::Channel>,
) -> Result<(), String> {
    let after = store.cursor(CONSUMER).await.map_err(|e| e.to_string())?;
    let mut stream = client
        .stream_changes(StreamChangesRequest {
            after_sequence: after,
            max_batch_size: 0,
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    while let Some(message) = stream.next().await {
        let message = message.map_err(|s| s.to_string())?;
        let Some(last) = message.events.last().map(|e| e.sequence) else {
            continue;
        };
        let erased: Vec<String> = message
            .events
            .into_iter()
            .filter_map(|e| match e.change {
                Some(Change::CustomerErased(x)) => Some(x.customer_id),
                _ => None,
            })
            .collect();
        if !erased.is_empty() {
            tracing::info!(customers = erased.len(), "applying erasures");
        }
        store
            .apply_erasures(CONSUMER, &erased, last)
            .await
            .map_err(|e| e.to_string())?;
    }
    Err("the change stream ended".into())
}
