//! Following the profile change feed from another service.
//!
//! A consumer keeps its cursor in its own database and applies each batch
//! together with the new cursor in one transaction, so after a crash or
//! restart it resumes exactly where its last committed batch ended: no loss,
//! no double counting. The follower reconnects with backoff and stops on
//! shutdown.
//!
//! Also here: following another service's revision stream (scoring's
//! `StreamScores`, feedback's `StreamCustomerSummaries`) by polling.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use patron_domain::ApiError;
use patron_proto::profile::{
    ChangeEvent, StreamChangesRequest, StreamChangesResponse,
    customer_profile_service_client::CustomerProfileServiceClient,
};

use patron_store::cursor::{Advance, CURSOR_MOVED};

use crate::{ServiceContext, ServiceKind};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a consumer does with the feed.
pub trait FeedConsumer: Send + Sync + 'static {
    /// The last sequence this consumer applied (0 before the first batch).
    fn cursor(&self) -> BoxFuture<'_, Result<i64, ApiError>>;
    /// Applies `events` and moves the cursor as `advance` says (from the
    /// sequence they follow to the last one), atomically; another replica
    /// having moved it first fails the whole batch with
    /// [`CURSOR_MOVED`](patron_store::cursor::CURSOR_MOVED).
    fn apply(
        &self,
        events: Vec<ChangeEvent>,
        advance: Advance,
    ) -> BoxFuture<'_, Result<(), ApiError>>;
}

/// Follows the profile feed in the background until shutdown.
pub fn follow(ctx: &ServiceContext, name: &'static str, consumer: Arc<dyn FeedConsumer>) {
    let Some(channel) = ctx.peers.channel(ServiceKind::Profile) else {
        tracing::error!(
            consumer = name,
            "no profile peer: the change feed cannot be followed"
        );
        return;
    };
    let shutdown = ctx.shutdown.clone();
    let metrics = ctx.metrics.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let client = CustomerProfileServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20);
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = run(client, consumer.as_ref(), |position, commit_time| {
                    let lag = commit_time.and_then(|t| {
                        let committed = std::time::UNIX_EPOCH
                            + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                        std::time::SystemTime::now().duration_since(committed).ok()
                    });
                    metrics.feed_applied(name, position, lag);
                }) => match result {
                    Ok(()) => {
                        // Another replica applied the batch: resume from its cursor.
                        tracing::debug!(consumer = name, "cursor moved by another replica; resuming");
                        delay = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(consumer = name, error = %e, retry_in_ms = delay.as_millis() as u64, "change feed consumer stopped");
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

/// How many events, at most, one apply takes from messages that arrived
/// together (a message is never split: one may go over).
const COALESCE_EVENTS: usize = 5_000;

/// The events of the next message and of every message that has already
/// arrived behind it (up to [`COALESCE_EVENTS`]), to apply together; `None`
/// when the stream ends. A stream that keeps up sends each commit as it
/// happens (a few events for one write), so a consumer that falls behind
/// under a burst finds hundreds of such messages queued; applying each on
/// its own pays every transaction's and every rescore's fixed cost again
/// (at 4,000 purchases/s in batches of 20, scoring's read model fell
/// seconds behind, see BENCHMARKS.md).
async fn next_batch<S>(stream: &mut S) -> Option<Result<Vec<ChangeEvent>, tonic::Status>>
where
    S: futures::Stream<Item = Result<StreamChangesResponse, tonic::Status>> + Unpin,
{
    let mut events = match stream.next().await? {
        Ok(message) => message.events,
        Err(e) => return Some(Err(e)),
    };
    while events.len() < COALESCE_EVENTS {
        match stream.next().now_or_never() {
            Some(Some(Ok(more))) => events.extend(more.events),
            // Nothing of it is applied: the consumer resumes from its cursor.
            Some(Some(Err(e))) => return Some(Err(e)),
            _ => break,
        }
    }
    Some(Ok(events))
}

/// Follows the feed until it fails (`Err`) or another replica moves the
/// cursor first (`Ok`).
async fn run(
    mut client: CustomerProfileServiceClient<crate::peers::PeerChannel>,
    consumer: &dyn FeedConsumer,
    applied: impl Fn(i64, Option<prost_types::Timestamp>),
) -> Result<(), String> {
    let mut after = consumer.cursor().await.map_err(|e| e.to_string())?;
    let mut stream = client
        .stream_changes(StreamChangesRequest {
            after_sequence: after,
            max_batch_size: 0,
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    while let Some(events) = next_batch(&mut stream).await {
        let events = events.map_err(|s| s.to_string())?;
        let Some((last, commit_time)) = events.last().map(|e| (e.sequence, e.commit_time)) else {
            continue;
        };
        match consumer
            .apply(
                events,
                Advance {
                    from: after,
                    to: last,
                },
            )
            .await
        {
            Ok(()) => {}
            Err(e) if e.reason == CURSOR_MOVED => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        after = last;
        applied(last, commit_time);
    }
    Err("the change stream ended".into())
}

/// Applies a peer's revision stream (rows with their revisions, in
/// revision order) that started after revision `after`. A revision may
/// continue in the next message, so each message acknowledges only the
/// revisions complete so far; the end of the stream completes the last one.
/// When another replica moved the cursor first, the pass ends early (`Ok`):
/// the next one starts from that replica's cursor.
pub async fn drain_revisions<T, S, A, Fut>(
    after: i64,
    mut stream: S,
    mut apply: A,
) -> Result<(), String>
where
    S: futures::Stream<Item = Result<(Vec<T>, Vec<i64>), tonic::Status>> + Unpin,
    A: FnMut(Vec<T>, Advance) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    let moved = |e: ApiError| {
        if e.reason == CURSOR_MOVED {
            Ok(())
        } else {
            Err(e.to_string())
        }
    };
    let mut acked = after;
    let mut last = after;
    while let Some(message) = stream.next().await {
        let (rows, revisions) = message.map_err(|s| s.to_string())?;
        let Some(&newest) = revisions.last() else {
            continue;
        };
        last = newest;
        let to = (newest - 1).max(after);
        if let Err(e) = apply(rows, Advance { from: acked, to }).await {
            return moved(e);
        }
        acked = to;
    }
    if last > acked
        && let Err(e) = apply(
            Vec::new(),
            Advance {
                from: acked,
                to: last,
            },
        )
        .await
    {
        return moved(e);
    }
    Ok(())
}

/// One pass over scoring's `StreamScores` after revision `after`: each score
/// becomes a row through `row`, and `apply` stores rows with the revision
/// to acknowledge (see [`drain_revisions`]).
pub async fn pull_scores<T, M, A, Fut>(
    channel: &crate::peers::PeerChannel,
    after: i64,
    row: M,
    apply: A,
) -> Result<(), String>
where
    M: Fn(patron_proto::scoring::CustomerScore) -> T,
    A: FnMut(Vec<T>, Advance) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    use patron_proto::scoring::{
        StreamScoresRequest, scoring_service_client::ScoringServiceClient,
    };
    let stream = ScoringServiceClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .stream_scores(StreamScoresRequest {
            after_revision: after,
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner()
        .map(|m| m.map(|m| (m.scores.into_iter().map(&row).collect(), m.revisions)));
    drain_revisions(after, stream, apply).await
}

/// One pass over feedback's `StreamCustomerSummaries` after revision
/// `after`, like [`pull_scores`].
pub async fn pull_feedback_summaries<T, M, A, Fut>(
    channel: &crate::peers::PeerChannel,
    after: i64,
    row: M,
    apply: A,
) -> Result<(), String>
where
    M: Fn(patron_proto::feedback::CustomerFeedbackSummary) -> T,
    A: FnMut(Vec<T>, Advance) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    use patron_proto::feedback::{
        StreamCustomerSummariesRequest, feedback_service_client::FeedbackServiceClient,
    };
    let stream = FeedbackServiceClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .stream_customer_summaries(StreamCustomerSummariesRequest {
            after_revision: after,
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner()
        .map(|m| m.map(|m| (m.summaries.into_iter().map(&row).collect(), m.revisions)));
    drain_revisions(after, stream, apply).await
}

/// Runs `pass` every `interval` until shutdown, logging failures.
pub fn every<F, Fut>(ctx: &ServiceContext, what: &'static str, interval: Duration, mut pass: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = pass() => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "{what} failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sequences: std::ops::Range<i64>) -> Result<StreamChangesResponse, tonic::Status> {
        Ok(StreamChangesResponse {
            events: sequences
                .map(|sequence| ChangeEvent {
                    sequence,
                    ..Default::default()
                })
                .collect(),
            head_sequence: 0,
        })
    }

    fn sequences(batch: Option<Result<Vec<ChangeEvent>, tonic::Status>>) -> Vec<i64> {
        batch.unwrap().unwrap().iter().map(|e| e.sequence).collect()
    }

    #[tokio::test]
    async fn messages_already_here_are_applied_together_up_to_the_cap() {
        // 3,000 single-write messages queued: one batch up to the cap, in
        // order, then the rest.
        let queued: Vec<_> = (0..3_000).map(|i| message(2 * i..2 * i + 2)).collect();
        let mut stream = futures::stream::iter(queued);
        let first = sequences(next_batch(&mut stream).await);
        assert_eq!(first, (0..COALESCE_EVENTS as i64).collect::<Vec<_>>());
        let second = sequences(next_batch(&mut stream).await);
        assert_eq!(second, (COALESCE_EVENTS as i64..6_000).collect::<Vec<_>>());
        assert!(next_batch(&mut stream).await.is_none());
    }

    #[tokio::test]
    async fn a_batch_does_not_wait_for_messages_yet_to_come() {
        let mut stream =
            futures::stream::iter([message(1..3), message(3..4)]).chain(futures::stream::pending());
        let batch = tokio::time::timeout(Duration::from_secs(5), next_batch(&mut stream))
            .await
            .expect("returned what had arrived");
        assert_eq!(sequences(batch), [1, 2, 3]);
    }

    #[tokio::test]
    async fn an_error_behind_a_message_is_not_lost() {
        let mut stream =
            futures::stream::iter([message(1..3), Err(tonic::Status::unavailable("gone"))]);
        let err = next_batch(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}
