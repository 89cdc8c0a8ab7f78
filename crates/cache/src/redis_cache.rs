//! Redis-backed cache.
//!
//! The connection is made in the background and re-made by the connection
//! manager after failures; until it exists every call fails fast with
//! [`CacheError::NotConnected`]. Every call is bounded by the response
//! timeout, so a hung Redis costs a caller at most that long; and after
//! [`TRIP_AFTER`] failures in a row the cache is skipped altogether for
//! [`OPEN_FOR`] (a circuit breaker), so a dead Redis costs callers nothing
//! until one call tries it again.
//!
//! In front of Redis sits a near tier: an in-process cache with a short TTL
//! (`cache.near_ttl_ms`), so a hot score costs no network round trip. Every
//! write through this cache publishes the keys it changed on a Redis
//! channel; every replica subscribes and drops those keys from its near
//! tier, so a write on one replica is seen by the others' next read. The
//! near tier is only used while the subscription is up (on every
//! (re)subscription it starts empty); an invalidation lost in between is
//! bounded by the near TTL.
//!
//! ## Layout in Redis
//! Entries live in a fixed number of Redis hashes (`redis.buckets`): the
//! entry for key `k` is field `k` of [`RedisSettings::hash_of`]`(k)`. A
//! recompute writes a million entries at once, and per-key `SET ... PX`
//! cost Redis 3 to 4 µs of CPU per key on the benchmark machine (4.5 to
//! 5.7 µs for new keys); `HSET` with 64 fields per command costs 0.7 to
//! 1 µs (1 to 1.9 µs for new ones), see BENCHMARKS.md. The price: a lookup is
//! a field of an `HMGET` (concurrent lookups share one pipelined round trip,
//! see `read_batch`), a command that costs Redis more than `GET`, and a TTL
//! belongs to a hash, not an entry. It is set when the hash is created (`PEXPIRE ...
//! NX`, with jitter) and never extended, so an entry still lives at most
//! the TTL (plus jitter) after it was written, and sometimes less (it goes
//! with its hash). Each write is one `MULTI`/`EXEC`, so no hash exists
//! without its TTL even when a connection breaks halfway.

use std::{
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::{
    CacheError, CacheSettings, CacheStats, LocalCache, RedisSettings, ScoreCache, jittered,
    read_batch::ReadBatcher,
    settings::{bucket_of, hash_name},
};

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

/// Writes of more keys than this invalidate whole near tiers (one message)
/// instead of naming every key.
const NAMED_KEYS_MAX: usize = 1_000;
/// Entries per pipelined round trip of a bulk write. Each round trip is one
/// `MULTI`/`EXEC`, which Redis runs without serving anyone else: this many
/// entries take it about a millisecond.
const PIPELINE: usize = 1_000;
/// Pipelines of one bulk write in flight at once.
const PIPELINES_IN_FLIGHT: usize = 4;
/// Bound on one pipelined round trip of a bulk write.
const BULK_TIMEOUT: Duration = Duration::from_secs(2);

/// The in-process tier in front of Redis.
///
/// A value read from Redis (or filled into it) is on its way for a round
/// trip; a write or an invalidation that lands meanwhile makes it stale.
/// So every change but a fill moves `changes` first and then changes the
/// entries, and a value read while `changes` moved is not kept
/// ([`Self::fill_read`]). Without that, a read racing an online score's
/// write put the older score back into the tier for the near TTL.
struct Near {
    entries: LocalCache,
    changes: AtomicU64,
    /// Subscribed to invalidations: only then is the tier read or filled.
    live: AtomicBool,
    /// The pub/sub channel, and this process's id on it (its own messages
    /// are skipped).
    channel: String,
    origin: String,
}

impl Near {
    /// Off until subscribed to `channel`.
    fn new(entries: LocalCache, channel: String) -> Self {
        Self {
            entries,
            changes: AtomicU64::new(0),
            live: AtomicBool::new(false),
            channel,
            origin: format!("{:016x}", rand::random::<u64>()),
        }
    }

    fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Where the tier's changes are: take it before a Redis round trip
    /// whose values [`Self::fill_read`] may keep.
    fn version(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Every change to the entries but a fill: the version moves first.
    fn change(&self, f: impl FnOnce(&LocalCache)) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        f(&self.entries);
    }

    /// Keeps `value`, read from Redis after [`Self::version`] gave
    /// `read_at`, unless the tier changed since or holds a live entry.
    /// A change between the check and the fill moved the version before
    /// it touched the entries: the second check sees it and drops the
    /// fill (or the change's own removal did).
    fn fill_read(&self, read_at: u64, key: &str, value: Bytes) -> bool {
        if self.version() != read_at || !self.entries.fill(key.to_owned(), value) {
            return false;
        }
        if self.version() != read_at {
            self.entries.remove(key);
            return false;
        }
        true
    }

    /// Applies one invalidation message: `origin\n*` or `origin\nkey\nkey...`
    /// (the callers' keys: the channel already belongs to one key prefix).
    fn apply(&self, message: &str) {
        let Some((origin, keys)) = message.split_once('\n') else {
            return;
        };
        if origin == self.origin {
            return;
        }
        self.change(|entries| {
            if keys == "*" {
                entries.invalidate_all();
            } else {
                for key in keys.split('\n') {
                    entries.remove(key);
                }
            }
        });
    }

    /// The message announcing a write of `keys`.
    fn message<'a>(&self, keys: impl ExactSizeIterator<Item = &'a str>) -> String {
        let mut message = format!("{}\n", self.origin);
        if keys.len() > NAMED_KEYS_MAX {
            message.push('*');
        } else {
            for (i, key) in keys.enumerate() {
                if i > 0 {
                    message.push('\n');
                }
                message.push_str(key);
            }
        }
        message
    }
}

#[derive(Clone)]
pub struct RedisCache {
    conn: Arc<OnceCell<ConnectionManager>>,
    near: Option<Arc<Near>>,
    breaker: Arc<Breaker>,
    since: Instant,
    prefix: Arc<str>,
    buckets: u32,
    ttl: Duration,
    jitter: f64,
    timeout: Duration,
    stats: Arc<CacheStats>,
    reads: Arc<ReadBatcher>,
}

impl RedisCache {
    /// Returns at once; connects in a background task, retrying with backoff.
    pub fn connect_in_background(redis: &RedisSettings, cache: &CacheSettings) -> Self {
        let near = (cache.near_ttl_ms > 0).then(|| {
            Arc::new(Near::new(
                LocalCache::with_ttl(
                    Duration::from_millis(cache.near_ttl_ms),
                    0.0,
                    cache.near_capacity,
                ),
                format!("{}invalidations", redis.key_prefix),
            ))
        });
        let this = Self {
            conn: Arc::default(),
            near: near.clone(),
            breaker: Arc::default(),
            since: Instant::now(),
            prefix: redis.key_prefix.as_str().into(),
            buckets: redis.buckets,
            ttl: Duration::from_secs(cache.ttl_secs.max(1)),
            jitter: cache.ttl_jitter,
            timeout: Duration::from_millis(redis.response_timeout_ms.max(1)),
            stats: Arc::default(),
            reads: Arc::default(),
        };
        let url = redis
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_owned())
            .unwrap_or_default();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(redis.connect_timeout_ms)))
            // Each call is bounded by `run_within` (short for reads, longer
            // for bulk pipelines); the connection's own bound is the longest.
            .set_response_timeout(Some(this.timeout.max(BULK_TIMEOUT)))
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
                        if let Some(near) = near {
                            subscribe_forever(client, near).await;
                        }
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

    fn bucket(&self, key: &str) -> u32 {
        bucket_of(key, self.buckets)
    }

    /// The hash holding `key`'s entry.
    fn hash_of(&self, key: &str) -> String {
        hash_name(&self.prefix, self.bucket(key))
    }

    /// A sort key for bulk writes: a writer that splits one large write
    /// over several [`ScoreCache::put_many`] calls (a recompute) and sends
    /// the entries in this order lets each call fill whole hashes, with a
    /// few large `HSET`s instead of one per entry.
    pub fn bulk_write_order(&self, key: &str) -> u32 {
        self.bucket(key)
    }

    fn conn(&self) -> Result<ConnectionManager, CacheError> {
        self.conn.get().cloned().ok_or(CacheError::NotConnected)
    }

    /// Runs one Redis call under the timeout, counting failures.
    async fn run<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        self.run_within(self.timeout, f).await
    }

    /// [`Self::run`] with a bound of its own (bulk writes take longer).
    async fn run_within<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        let now_ms = self.since.elapsed().as_millis() as u64;
        if now_ms < self.breaker.open_until_ms.load(Ordering::Relaxed) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CacheError::NotConnected);
        }
        // No time left (a read that queued for all of it): a timeout,
        // without sending anything.
        let result = if limit.is_zero() {
            Err(CacheError::Timeout)
        } else {
            match tokio::time::timeout(limit, f).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) if e.is_timeout() => Err(CacheError::Timeout),
                Ok(Err(e)) => Err(CacheError::Backend(e.to_string())),
                Err(_) => Err(CacheError::Timeout),
            }
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

    /// One value per key, in order: near tier first, then Redis (see
    /// [`Self::far`]); `counted` adds the lookups to the stats.
    async fn fetch_many(
        &self,
        keys: &[String],
        counted: bool,
    ) -> Result<Vec<Option<Bytes>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut values: Vec<Option<Bytes>> = match self.near() {
            Some(near) => {
                let now = Instant::now();
                keys.iter().map(|k| near.entries.lookup(k, now)).collect()
            }
            None => vec![None; keys.len()],
        };
        let near_hits = values.iter().filter(|v| v.is_some()).count() as u64;
        let wanted: Vec<usize> = (0..keys.len()).filter(|i| values[*i].is_none()).collect();
        let mut hits = near_hits;
        if !wanted.is_empty() {
            let asked: Vec<&String> = wanted.iter().map(|&i| &keys[i]).collect();
            let far = self.far(&asked, self.timeout).await?;
            for (i, value) in wanted.into_iter().zip(far) {
                hits += u64::from(value.is_some());
                values[i] = value;
            }
        }
        if counted {
            self.stats.near_hits.fetch_add(near_hits, Ordering::Relaxed);
            self.stats.hits.fetch_add(hits, Ordering::Relaxed);
            self.stats
                .misses
                .fetch_add(values.len() as u64 - hits, Ordering::Relaxed);
        }
        Ok(values)
    }

    /// One value per key, in order, from Redis in one round trip (one
    /// `HMGET` per hash, pipelined) within `limit`; the near tier keeps the
    /// values found.
    async fn far<K: AsRef<str>>(
        &self,
        keys: &[K],
        limit: Duration,
    ) -> Result<Vec<Option<Bytes>>, CacheError> {
        let mut conn = self.connected()?;
        // `order` is the keys' positions in reply order.
        let mut by_bucket: Vec<(u32, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (self.bucket(key.as_ref()), i))
            .collect();
        by_bucket.sort_unstable_by_key(|&(bucket, _)| bucket);
        let mut pipe = redis::pipe();
        let mut order = Vec::with_capacity(by_bucket.len());
        let read_at = self.near().map(Near::version);
        for run in by_bucket.chunk_by(|a, b| a.0 == b.0) {
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(hash_name(&self.prefix, run[0].0));
            for &(_, i) in run {
                hmget.arg(keys[i].as_ref());
                order.push(i);
            }
            pipe.add_command(hmget);
        }
        if !limit.is_zero() {
            self.stats.redis_reads.fetch_add(1, Ordering::Relaxed);
        }
        let replies: Vec<Vec<Option<Vec<u8>>>> =
            self.run_within(limit, pipe.query_async(&mut conn)).await?;
        let mut values = vec![None; order.len()];
        let near = self.near().zip(read_at);
        for (i, value) in order.into_iter().zip(replies.into_iter().flatten()) {
            let value = value.map(Bytes::from);
            if let (Some((near, read_at)), Some(v)) = (near, &value) {
                near.fill_read(read_at, keys[i].as_ref(), v.clone());
            }
            values[i] = value;
        }
        Ok(values)
    }
}

/// Keeps the near tier subscribed to invalidations, re-subscribing after
/// failures; the tier is off (and emptied) whenever the subscription is down.
async fn subscribe_forever(client: Client, near: Arc<Near>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&near.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                near.change(LocalCache::invalidate_all);
                near.live.store(true, Ordering::Release);
                delay = Duration::from_millis(200);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(text) = msg.get_payload::<String>() {
                        near.apply(&text);
                    }
                }
                near.live.store(false, Ordering::Release);
                near.change(LocalCache::invalidate_all);
                tracing::warn!(
                    "redis invalidation subscription lost; near cache off until it is back"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to cache invalidations");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

impl RedisCache {
    /// The near tier, while it is subscribed to invalidations.
    fn near(&self) -> Option<&Near> {
        self.near.as_deref().filter(|n| n.live())
    }

    /// Whether the near tier is subscribed (always false when it is off).
    pub fn near_tier_live(&self) -> bool {
        self.near().is_some()
    }

    /// Adds `PUBLISH` of the written keys to a pipeline, when there is a near tier.
    fn announce<'a>(
        &self,
        pipe: &mut redis::Pipeline,
        keys: impl ExactSizeIterator<Item = &'a str>,
    ) {
        if let Some(near) = &self.near {
            pipe.publish(&near.channel, near.message(keys)).ignore();
        }
    }
}

impl ScoreCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        if let Some(near) = self.near()
            && let Some(value) = near.entries.lookup(key, Instant::now())
        {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            self.stats.near_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(value));
        }
        // Concurrent reads share round trips; see `read_batch`.
        let value = self
            .reads
            .read(key, self.timeout, |keys, left| async move {
                let values = self.far(&keys, left).await;
                if values.is_err() && keys.len() > 1 {
                    // Counted once in `run_within`: count the others too,
                    // each fell back to the store.
                    let others = keys.len() as u64 - 1;
                    self.stats.errors.fetch_add(others, Ordering::Relaxed);
                }
                values
            })
            .await?;
        let counter = if value.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    async fn look_again(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        self.fetch_many(keys, false).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        self.fetch_many(keys, true).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError> {
        self.put_many(vec![(key.to_owned(), value)]).await
    }

    /// Pipelined, [`PIPELINE`] entries per round trip, grouped by hash
    /// (one `HSET` per hash in a round trip). A write of up to
    /// [`NAMED_KEYS_MAX`] keys names them to the other replicas' near tiers
    /// in the same round trip; a larger one (a recompute) tells them to
    /// start over once all of it is written.
    async fn put_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let bulk = entries.len() > NAMED_KEYS_MAX;
        let mut conn = self.connected()?;
        // Entry indices by hash. The sort is stable: of two writes of one
        // key, the later one comes later in the `HSET` and wins.
        let mut order: Vec<(u32, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (self.bucket(key), i))
            .collect();
        order.sort_by_key(|&(bucket, _)| bucket);
        let pieces = hset_pieces(&order);
        let trips = round_trips(&pieces);
        // A few round trips in flight, so building the next one here
        // overlaps Redis executing the last one.
        let limit = self.timeout.max(BULK_TIMEOUT); // a full round trip moves a few hundred KB
        // (Indices, not slices: a closure over a borrowed slice trips the
        // Send check of the returned future.)
        let (order, pieces, all) = (&order, &pieces, &entries);
        let written: Result<(), CacheError> = futures::stream::iter(trips)
            .map(|trip| {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for piece in &pieces[trip.clone()] {
                    let hash = hash_name(&self.prefix, order[piece.start].0);
                    let mut hset = redis::cmd("HSET");
                    hset.arg(&hash);
                    for &(_, i) in &order[piece.clone()] {
                        let (key, value) = &all[i];
                        hset.arg(key).arg(value.as_ref());
                    }
                    pipe.add_command(hset).ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&hash)
                        .arg(self.ttl_ms())
                        .arg("NX")
                        .ignore();
                }
                if !bulk {
                    let first = pieces[trip.start].start;
                    let last = pieces[trip.end - 1].end;
                    self.announce(
                        &mut pipe,
                        order[first..last].iter().map(|&(_, i)| all[i].0.as_str()),
                    );
                }
                let mut conn = conn.clone();
                async move {
                    self.run_within(limit, pipe.query_async::<()>(&mut conn))
                        .await
                }
            })
            .buffer_unordered(PIPELINES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(drop);
        if bulk {
            let mut pipe = redis::pipe();
            self.announce(&mut pipe, entries.iter().map(|(k, _)| k.as_str()));
            let _ = self.run(pipe.query_async::<()>(&mut conn)).await;
        }
        // This replica's near tier takes the new values (or, for writes too
        // large to name, starts over like every other replica's).
        if let Some(near) = &self.near {
            if written.is_err() || bulk {
                near.change(LocalCache::invalidate_all);
            } else if near.live() {
                near.change(|near| {
                    for (key, value) in entries {
                        near.store(key, value);
                    }
                });
            }
        }
        written
    }

    /// One round trip: `HSETNX` per entry (with the hash's TTL set if the
    /// hash is new, as in `put_many`), in one `MULTI`/`EXEC`. The near tier
    /// takes only the entries Redis took. Nothing is announced: the other
    /// replicas' near tiers hold no value that this fill replaces.
    async fn fill_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.connected()?;
        let read_at = self.near().map(Near::version);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value) in &entries {
            let hash = self.hash_of(key);
            pipe.hset_nx(&hash, key, value.as_ref());
            pipe.cmd("PEXPIRE")
                .arg(&hash)
                .arg(self.ttl_ms())
                .arg("NX")
                .ignore();
        }
        let added: Vec<bool> = self.run(pipe.query_async(&mut conn)).await?;
        if let (Some(near), Some(read_at)) = (self.near(), read_at) {
            for ((key, value), added) in entries.into_iter().zip(added) {
                if added {
                    near.fill_read(read_at, &key, value);
                }
            }
        }
        Ok(())
    }

    async fn invalidate(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(near) = &self.near {
            near.change(|near| {
                for key in keys {
                    near.remove(key);
                }
            });
        }
        let mut conn = self.connected()?;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.hdel(self.hash_of(key), key).ignore();
        }
        self.announce(&mut pipe, keys.iter().map(String::as_str));
        self.run(pipe.query_async::<()>(&mut conn)).await
    }
}

/// Ranges of `order` (entry indices sorted by hash) that each go into one
/// `HSET`: one hash's entries, at most [`PIPELINE`] of them.
fn hset_pieces(order: &[(u32, usize)]) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for end in 1..=order.len() {
        if end == order.len() || order[end].0 != order[start].0 || end - start == PIPELINE {
            pieces.push(start..end);
            start = end;
        }
    }
    pieces
}

/// Ranges of `pieces` that each make one round trip: consecutive pieces of
/// at most [`PIPELINE`] entries in all.
fn round_trips(pieces: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut trips = Vec::new();
    let (mut first, mut entries) = (0, 0);
    for (p, piece) in pieces.iter().enumerate() {
        if entries > 0 && entries + piece.len() > PIPELINE {
            trips.push(first..p);
            (first, entries) = (p, 0);
        }
        entries += piece.len();
    }
    if first < pieces.len() {
        trips.push(first..pieces.len());
    }
    trips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_near_tier_keeps_no_value_read_before_a_change() {
        let near = Near::new(
            LocalCache::with_ttl(Duration::from_secs(60), 0.0, 100),
            "test:invalidations".to_owned(),
        );
        let now = Instant::now;
        let value = |s: &'static str| Bytes::from_static(s.as_bytes());
        // Nothing changed during the read: kept.
        let read_at = near.version();
        assert!(near.fill_read(read_at, "a", value("a1")));
        assert_eq!(near.entries.lookup("a", now()), Some(value("a1")));
        // Another replica's write announced while a read of the older value
        // was on its way: the old value is not kept.
        let read_at = near.version();
        near.apply("other-replica\nb");
        assert!(!near.fill_read(read_at, "b", value("b-old")));
        assert_eq!(near.entries.lookup("b", now()), None);
        // Nor after an invalidation of everything (a recompute's write).
        let read_at = near.version();
        near.apply("other-replica\n*");
        assert!(!near.fill_read(read_at, "b", value("b-old")));
        // This replica's own write while a read was on its way: the written
        // value stays.
        let read_at = near.version();
        near.change(|e| e.store("c".to_owned(), value("c-new")));
        assert!(!near.fill_read(read_at, "c", value("c-old")));
        assert_eq!(near.entries.lookup("c", now()), Some(value("c-new")));
        // A fill never replaces a live entry, read at any version.
        assert!(!near.fill_read(near.version(), "c", value("c-old")));
        assert_eq!(near.entries.lookup("c", now()), Some(value("c-new")));
        // Its own announcements come back to it over the channel and change
        // nothing.
        let read_at = near.version();
        near.apply(&format!("{}\nd", near.origin));
        assert!(near.fill_read(read_at, "d", value("d1")));
    }

    #[test]
    fn writes_are_cut_into_whole_hashes_and_bounded_round_trips() {
        // 2,500 entries of hash 0, 3 of hash 1, 998 of hash 2.
        let order: Vec<(u32, usize)> = std::iter::repeat_n(0, 2_500)
            .chain(std::iter::repeat_n(1, 3))
            .chain(std::iter::repeat_n(2, 998))
            .enumerate()
            .map(|(i, b)| (b, i))
            .collect();
        let pieces = hset_pieces(&order);
        assert_eq!(
            pieces,
            vec![
                0..1_000,
                1_000..2_000,
                2_000..2_500,
                2_500..2_503,
                2_503..3_501
            ]
        );
        let trips = round_trips(&pieces);
        assert_eq!(trips, vec![0..1, 1..2, 2..4, 4..5]);
        for trip in &trips {
            let entries: usize = pieces[trip.clone()].iter().map(|p| p.len()).sum();
            assert!(entries <= PIPELINE, "{entries}");
        }
        assert!(round_trips(&hset_pieces(&[])).is_empty());
    }
}
