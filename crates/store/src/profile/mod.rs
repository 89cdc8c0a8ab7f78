//! The profile service's tables: customers, their transactions, events and
//! interactions, idempotency keys, and the change-feed outbox.

mod customers;
pub mod entity;
mod feed;

pub use feed::{ChangeKind, ChangeRow, NewChange};

use std::sync::Arc;

use patron_domain::customer::Customer;
use sea_orm::DatabaseConnection;

use crate::Storage;

/// Encodes the feed payload of each kind of change. The service supplies it
/// (protobuf), so storage stays free of wire types.
pub trait FeedCodec: Send + Sync + 'static {
    fn customer(&self, customer: &Customer) -> Vec<u8>;
}

/// Repository over the profile tables. Every write appends its change-feed
/// entries in the same database transaction (transactional outbox).
#[derive(Clone)]
pub struct ProfileStore {
    db: DatabaseConnection,
    codec: Arc<dyn FeedCodec>,
}

impl ProfileStore {
    pub fn new(storage: &Storage, codec: Arc<dyn FeedCodec>) -> Self {
        Self {
            db: storage.connection().clone(),
            codec,
        }
    }
}
