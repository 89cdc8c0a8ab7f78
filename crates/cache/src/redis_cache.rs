//! Redis-backed cache.
//!
//! The connection is made in the background and re-made by the connection
//! manager after failures; until it exists every call fails fast with
//! [`CacheError::NotConnected`]. Every call is bounded by the response
//! timeout, so a hung Redis costs a caller at most that long; and after
//! [`TRIP_AFTER`] failures in a row the cache is skipped altogether for
//! [`OPEN_FOR`] (a circuit breaker), so a dead Redis costs callers nothing
//! until one call tries it again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    AsyncCommands, Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::{CacheError, CacheSettings, CacheStats, RedisSettings, ScoreCache, jittered};

/// Consecutive failures that open the breaker.
const TRIP_AFTER: u32 = 3;
/// How long an open breaker skips Redis before letting one call try again.
const OPEN_FOR: Duration = Duration::from_millis(500);

/// Failures in a row, and until when (ms after `since`) calls skip Redis.
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
}

#[derive(Clone)]
pub struct RedisCache {
    conn: Arc<OnceCell<ConnectionManager>>,
    breaker: Arc<Breaker>,
    since: Instant,
    prefix: Arc<str>,
    ttl: Duration,
    jitter: f64,
    timeout: Duration,
    stats: Arc<CacheStats>,
}

impl RedisCache {
    /// Returns at once; connects in a background task, retrying with backoff.
    pub fn connect_in_background(redis: &RedisSettings, cache: &CacheSettings) -> Self {
        let this = Self {
            conn: Arc::default(),
            breaker: Arc::default(),
            since: Instant::now(),
            prefix: redis.key_prefix.as_str().into(),
            ttl: Duration::from_secs(cache.ttl_secs.max(1)),
            jitter: cache.ttl_jitter,
            timeout: Duration::from_millis(redis.response_timeout_ms.max(1)),
            stats: Arc::default(),
        };
        let url = redis
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_owned())
            .unwrap_or_default();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(redis.connect_timeout_ms)))
            .set_response_timeout(Some(this.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let cell = this.conn.clone();
        tokio::spawn(async move {
            let client = match Client::open(url.as_str()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "invalid redis.url; the cache stays disabled");
                    return;
                }
            };
            let mut delay = Duration::from_millis(200);
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        let _ = cell.set(manager);
                        tracing::info!("connected to redis");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unreachable");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        this
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Whether the background connection has been established.
    pub fn is_connected(&self) -> bool {
        self.conn.initialized()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn conn(&self) -> Result<ConnectionManager, CacheError> {
        self.conn.get().cloned().ok_or(CacheError::NotConnected)
    }

    /// Runs one Redis call under the timeout, counting failures.
    async fn run<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        let now_ms = self.since.elapsed().as_millis() as u64;
        if now_ms < self.breaker.open_until_ms.load(Ordering::Relaxed) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CacheError::NotConnected);
        }
        let result = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(CacheError::Timeout),
            Ok(Err(e)) => Err(CacheError::Backend(e.to_string())),
            Err(_) => Err(CacheError::Timeout),
        };
        match &result {
            Ok(_) => self.breaker.failures.store(0, Ordering::Relaxed),
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if self.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1 >= TRIP_AFTER {
                    let until = self.since.elapsed() + OPEN_FOR;
                    self.breaker
                        .open_until_ms
                        .store(until.as_millis() as u64, Ordering::Relaxed);
                }
            }
        }
        result
    }

    fn ttl_ms(&self) -> u64 {
        jittered(self.ttl, self.jitter).as_millis() as u64
    }

    fn connected(&self) -> Result<ConnectionManager, CacheError> {
        self.conn().inspect_err(|_| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        })
    }
}

impl ScoreCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut conn = self.connected()?;
        let key = self.key(key);
        let value: Option<Vec<u8>> = self.run(conn.get(&key)).await?;
        let counter = if value.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connected()?;
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let values: Vec<Option<Vec<u8>>> = self.run(conn.mget(&keys)).await?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        self.stats
            .misses
            .fetch_add(values.len() as u64 - hits, Ordering::Relaxed);
        Ok(values)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), CacheError> {
        let mut conn = self.connected()?;
        let key = self.key(key);
        let ttl = self.ttl_ms();
        self.run(conn.pset_ex::<_, _, ()>(&key, value, ttl)).await
    }

    async fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.connected()?;
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.pset_ex(self.key(&key), value, self.ttl_ms()).ignore();
        }
        self.run(pipe.query_async::<()>(&mut conn)).await
    }

    async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.connected()?;
        let key = self.key(key);
        self.run(conn.del::<_, ()>(&key)).await
    }
}
