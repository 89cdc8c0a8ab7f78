//! The score cache: Redis when `REDIS_URL` is set (with a short-lived
//! in-process near tier in front of it, kept coherent across replicas by
//! Redis pub/sub), an in-process cache otherwise.
//!
//! Callers treat every cache failure as a miss and serve from the store: the
//! cache makes reads fast, it never makes them fail. Failures are counted in
//! [`CacheStats`] so operators can see them.

mod local;
mod read_batch;
mod redis_cache;
mod settings;
mod single_flight;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::Rng;

pub use bytes::Bytes;
pub use local::LocalCache;
pub use redis_cache::RedisCache;
pub use settings::{CacheSettings, RedisSettings};
pub use single_flight::SingleFlight;

/// Why a cache operation did not complete. Never surfaced to RPC callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache not connected")]
    NotConnected,
    #[error("cache operation timed out")]
    Timeout,
    #[error("cache error: {0}")]
    Backend(String),
}

/// Operations every cache backend offers. Values are opaque bytes (the
/// encoded score; `Bytes`, so a hit shares the cached buffer instead of
/// copying it); keys are the caller's, the backend adds its prefix.
pub trait ScoreCache: Send + Sync {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, CacheError>> + Send;
    /// [`ScoreCache::get`] again by a caller whose first look was counted
    /// (a miss that waited to load): not counted a second time.
    fn look_again(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Bytes>>, CacheError>> + Send;
    /// One result per key, in order.
    fn get_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Bytes>>, CacheError>> + Send;
    fn put(&self, key: &str, value: Bytes) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Writes many entries in one round trip (pipelined on Redis).
    fn put_many(
        &self,
        entries: Vec<(String, Bytes)>,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Adds the entries the cache does not hold: how a read that missed
    /// and loaded from the store fills the cache. An entry written meanwhile
    /// is kept: a recompute's or an online score's write lands between the
    /// load and the fill only if it is newer than what the load read, and
    /// a plain write would put the older score back for the whole TTL.
    fn fill_many(
        &self,
        entries: Vec<(String, Bytes)>,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Removes entries (in one round trip on Redis, which also tells the
    /// other replicas' near tiers).
    fn invalidate(&self, keys: &[String]) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// Hit, miss and failure counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered by the cache (either tier).
    pub hits: AtomicU64,
    /// Of those, lookups answered by the in-process near tier before Redis.
    pub near_hits: AtomicU64,
    pub misses: AtomicU64,
    /// Operations that failed or timed out and fell back to the store.
    pub errors: AtomicU64,
    /// Reads the callers made from the store after a miss (concurrent
    /// misses for one key count once: they share a load).
    pub loads: AtomicU64,
    /// Read round trips to Redis (concurrent reads share them: lookups
    /// that reached Redis, `hits + misses - near_hits`, over this is the
    /// keys per round trip).
    pub redis_reads: AtomicU64,
}

impl CacheStats {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// The configured cache backend.
#[derive(Clone)]
pub enum Cache {
    Redis(RedisCache),
    Local(LocalCache),
}

impl Cache {
    /// Redis when `redis.url` is set, otherwise the in-process cache.
    /// Never fails: an unreachable Redis is retried in the background.
    pub fn from_settings(redis: &RedisSettings, cache: &CacheSettings) -> Self {
        match &redis.url {
            Some(_) => Cache::Redis(RedisCache::connect_in_background(redis, cache)),
            None => Cache::Local(LocalCache::new(cache)),
        }
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        match self {
            Cache::Redis(c) => c.stats(),
            Cache::Local(c) => c.stats(),
        }
    }

    /// A sort key for a large write split over several
    /// [`ScoreCache::put_many`] calls: entries sent in this order are
    /// written with fewer, larger Redis commands (see
    /// [`RedisCache::bulk_write_order`]). Any order is correct; see
    /// [`Self::orders_bulk_writes`].
    pub fn bulk_write_order(&self, key: &str) -> u32 {
        match self {
            Cache::Redis(c) => c.bulk_write_order(key),
            Cache::Local(_) => 0,
        }
    }

    /// Whether [`Self::bulk_write_order`] tells entries apart (the
    /// in-process cache takes any order as well as another, so a caller
    /// need not sort at all).
    pub fn orders_bulk_writes(&self) -> bool {
        matches!(self, Cache::Redis(_))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Cache::Redis(_) => "redis",
            Cache::Local(_) => "local",
        }
    }
}

impl ScoreCache for Cache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        match self {
            Cache::Redis(c) => c.get(key).await,
            Cache::Local(c) => c.get(key).await,
        }
    }

    async fn look_again(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        match self {
            Cache::Redis(c) => c.look_again(keys).await,
            Cache::Local(c) => c.look_again(keys).await,
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        match self {
            Cache::Redis(c) => c.get_many(keys).await,
            Cache::Local(c) => c.get_many(keys).await,
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError> {
        match self {
            Cache::Redis(c) => c.put(key, value).await,
            Cache::Local(c) => c.put(key, value).await,
        }
    }

    async fn put_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        match self {
            Cache::Redis(c) => c.put_many(entries).await,
            Cache::Local(c) => c.put_many(entries).await,
        }
    }

    async fn fill_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        match self {
            Cache::Redis(c) => c.fill_many(entries).await,
            Cache::Local(c) => c.fill_many(entries).await,
        }
    }

    async fn invalidate(&self, keys: &[String]) -> Result<(), CacheError> {
        match self {
            Cache::Redis(c) => c.invalidate(keys).await,
            Cache::Local(c) => c.invalidate(keys).await,
        }
    }
}

/// `ttl` plus a uniformly random extra of up to `jitter` x `ttl`, so entries
/// written together (after a recompute) do not all expire together.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return ttl;
    }
    let extra = rand::rng().random_range(0.0..=jitter);
    ttl + ttl.mul_f64(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let ttl = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(ttl, 0.1);
            assert!(d >= ttl && d <= Duration::from_secs(110), "{d:?}");
        }
        assert_eq!(jittered(ttl, 0.0), ttl);
    }
}
