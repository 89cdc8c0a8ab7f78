//! The change feed: outbox payload encoding (and redaction on erasure), and
//! the `StreamChanges` stream.
//!
//! Delivery: every change committed after `after_sequence` is delivered once
//! per stream, in strictly increasing sequence order, without gaps (the
//! outbox hands out sequences under a row lock, so commits are ordered).
//! A consumer that records the last sequence it applied and resumes from it
//! gets at-least-once delivery across disconnects and restarts; applying
//! idempotently (or recording the cursor with the data) makes it exactly-once.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use patron_domain::{
    activity::{Event, Interaction, Transaction},
    customer::Customer,
};
use patron_proto::profile::{self as pb, change_event::Change};
use patron_runtime::{convert::to_timestamp, to_status};
use patron_store::profile::{FeedCodec, ProfileStore};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::convert::{
    customer_to_proto, event_to_proto, interaction_to_proto, transaction_to_proto,
};

/// Largest (and default) number of events per response message.
pub(crate) const MAX_BATCH: u64 = 5_000;
/// How often a caught-up stream looks for commits made by other replicas;
/// commits in this process wake it at once.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) type ChangeStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamChangesResponse, Status>> + Send>>;

/// Payloads are encoded `ChangeEvent`s without sequence and commit time,
/// which the stream fills in from the outbox row.
pub(crate) struct ProtoFeedCodec;

fn encode(change: Change) -> Vec<u8> {
    pb::ChangeEvent {
        change: Some(change),
        ..Default::default()
    }
    .encode_to_vec()
}

impl FeedCodec for ProtoFeedCodec {
    fn customer(&self, customer: &Customer) -> Vec<u8> {
        encode(Change::Customer(customer_to_proto(customer)))
    }

    fn transaction(&self, transaction: &Transaction) -> Vec<u8> {
        encode(Change::Transaction(transaction_to_proto(transaction)))
    }

    fn event(&self, event: &Event) -> Vec<u8> {
        encode(Change::Event(event_to_proto(event)))
    }

    fn interaction(&self, interaction: &Interaction) -> Vec<u8> {
        encode(Change::Interaction(interaction_to_proto(interaction)))
    }

    fn erasure(&self, customer: &Customer) -> Vec<u8> {
        encode(Change::CustomerErased(pb::CustomerErased {
            customer_id: customer.id.clone(),
            external_id: customer.fields.external_id.clone(),
            erase_time: customer.erase_time.map(to_timestamp),
        }))
    }

    fn redact(&self, payload: &[u8]) -> Vec<u8> {
        let Ok(mut event) = pb::ChangeEvent::decode(payload) else {
            // Not ours to keep if we cannot read it.
            return pb::ChangeEvent::default().encode_to_vec();
        };
        match &mut event.change {
            Some(Change::Customer(c)) => {
                *c = pb::Customer {
                    id: std::mem::take(&mut c.id),
                    external_id: std::mem::take(&mut c.external_id),
                    region: std::mem::take(&mut c.region),
                    gender: c.gender,
                    income_band: c.income_band,
                    create_time: c.create_time,
                    update_time: c.update_time,
                    etag: std::mem::take(&mut c.etag),
                    ..Default::default()
                };
            }
            Some(Change::Interaction(i)) => i.notes.clear(),
            Some(Change::Event(e)) => e.properties.clear(),
            Some(Change::Transaction(_) | Change::CustomerErased(_)) | None => {}
        }
        event.encode_to_vec()
    }
}

/// Streams changes after `after`: the backlog in batches, then live.
pub(crate) fn stream(
    store: ProfileStore,
    after: i64,
    batch: u64,
    shutdown: CancellationToken,
) -> ChangeStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut cursor = after;
        let mut head = store.subscribe_head();
        // The next batch is read while the current one is decoded and sent.
        let mut prefetched: Option<tokio::task::JoinHandle<_>> = None;
        loop {
            let read = match prefetched.take() {
                Some(handle) => handle
                    .await
                    .unwrap_or_else(|e| Err(patron_domain::ApiError::internal(e))),
                None => store.changes_after(cursor, batch).await,
            };
            let rows = match read {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            };
            let full = rows.len() as u64 == batch;
            if let Some(last) = rows.last() {
                cursor = last.sequence;
                if full {
                    let store = store.clone();
                    let from = cursor;
                    prefetched = Some(tokio::spawn(async move {
                        store.changes_after(from, batch).await
                    }));
                }
                let mut events = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut event =
                        pb::ChangeEvent::decode(row.payload.as_slice()).unwrap_or_default();
                    event.sequence = row.sequence;
                    event.commit_time = Some(to_timestamp(row.commit_time));
                    events.push(event);
                }
                let head_sequence = if full {
                    store.head_sequence().await.unwrap_or(cursor)
                } else {
                    cursor.max(*head.borrow())
                };
                let message = pb::StreamChangesResponse {
                    events,
                    head_sequence,
                };
                tokio::select! {
                    sent = tx.send(Ok(message)) => if sent.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
                if full {
                    continue;
                }
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
