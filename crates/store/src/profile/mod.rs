//! The profile service's tables: customers, their transactions, events and
//! interactions, idempotency keys, the change-feed outbox and the erasure log.

mod activity;
mod customers;
pub mod entity;
mod feed;

pub use customers::{
    CustomerOrder, CustomerPage, CustomerQuery, OrderField, UpsertOutcome, customer_filter_fields,
};
pub use feed::{ChangeKind, ChangeRow, NewChange};

use std::sync::Arc;

use patron_domain::{
    activity::{Event, Interaction, Transaction},
    customer::Customer,
};
use sea_orm::DatabaseConnection;
use tokio::sync::watch;

use crate::Storage;

/// Encodes feed payloads (protobuf, supplied by the service, so storage
/// stays free of wire types) and redacts them on erasure.
pub trait FeedCodec: Send + Sync + 'static {
    fn customer(&self, customer: &Customer) -> Vec<u8>;
    fn transaction(&self, transaction: &Transaction) -> Vec<u8>;
    fn event(&self, event: &Event) -> Vec<u8>;
    fn interaction(&self, interaction: &Interaction) -> Vec<u8>;
    fn erasure(&self, customer: &Customer) -> Vec<u8>;
    /// The payload with the personal data of an erased customer removed.
    fn redact(&self, payload: &[u8]) -> Vec<u8>;
}

/// Repository over the profile tables. Every write appends its change-feed
/// entries in the same database transaction (transactional outbox).
#[derive(Clone)]
pub struct ProfileStore {
    db: DatabaseConnection,
    codec: Arc<dyn FeedCodec>,
    /// The last sequence this process committed; wakes live feed readers.
    head: Arc<watch::Sender<i64>>,
}

impl ProfileStore {
    pub fn new(storage: &Storage, codec: Arc<dyn FeedCodec>) -> Self {
        Self {
            db: storage.connection().clone(),
            codec,
            head: Arc::new(watch::channel(0).0),
        }
    }

    /// Notified after every commit that appended to the feed in this process.
    pub fn subscribe_head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    fn committed(&self, last_sequence: i64) {
        self.head.send_if_modified(|head| {
            let advanced = last_sequence > *head;
            if advanced {
                *head = last_sequence;
            }
            advanced
        });
    }
}
