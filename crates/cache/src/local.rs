//! In-process cache: the whole cache when no Redis is configured, and the
//! short-lived near tier in front of Redis when one is.
//!
//! Built on quick_cache (sharded, S3-FIFO eviction): a lookup is a hash, a
//! shard's read lock and a reference-count increment on the `Bytes` value,
//! where moka's per-read bookkeeping cost about a microsecond per key on the
//! `BatchGetScores` path (BENCHMARKS.md). quick_cache has no time to live of
//! its own, so each entry carries its deadline: a lookup past it removes the
//! entry and answers a miss; entries nobody reads again leave by eviction.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use quick_cache::sync::{Cache as QuickCache, GuardResult};

use crate::{CacheError, CacheSettings, CacheStats, ScoreCache, jittered};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires: Instant,
}

/// Room for a key inside the cache's own entry: a score key ("score:" and
/// a 36-character id) is 42 bytes.
const INLINE: usize = 46;

/// A key held inside the entry when it fits, so a lookup compares it where
/// the entry is instead of following a pointer to a separate allocation:
/// a `BatchGetScores` of 100 ids makes 100 lookups, and with `String` keys
/// they were a fifth of the server's CPU (perf), mostly waiting on memory.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Key {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(s) => s.as_bytes(),
        }
    }

    /// Only for hashing (on insert): lookups compare bytes, unchecked.
    fn as_str(&self) -> &str {
        // Copied from a `str` whole (see `From<String>`): valid UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Key::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(s.into_boxed_str())
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

/// As `str` hashes, so a lookup by `&str` finds the key.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl quick_cache::Equivalent<Key> for str {
    fn equivalent(&self, key: &Key) -> bool {
        self.as_bytes() == key.as_bytes()
    }
}

#[derive(Clone)]
pub struct LocalCache {
    entries: Arc<QuickCache<Key, Entry>>,
    ttl: Duration,
    jitter: f64,
    stats: Arc<CacheStats>,
}

impl LocalCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self::with_ttl(
            Duration::from_secs(settings.ttl_secs.max(1)),
            settings.ttl_jitter,
            settings.local_capacity,
        )
    }

    /// At most `capacity` entries, each living `ttl` (plus up to `jitter` x `ttl`).
    pub fn with_ttl(ttl: Duration, jitter: f64, capacity: u64) -> Self {
        let capacity = usize::try_from(capacity.max(1)).unwrap_or(usize::MAX);
        Self {
            entries: Arc::new(QuickCache::new(capacity)),
            ttl,
            jitter,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries.clear();
    }

    /// Drops one entry.
    pub fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    /// The live value under `key`, not counted in the stats.
    pub(crate) fn lookup(&self, key: &str, now: Instant) -> Option<Bytes> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value);
        }
        // Expired: remove it, unless a writer has just replaced it.
        self.entries.remove_if(key, |e| e.expires <= now);
        None
    }

    /// Stores `value` under `key` unless a live entry is there; false if
    /// one was. Atomic: of a fill and a concurrent [`Self::store`], the
    /// store's value stays.
    pub(crate) fn fill(&self, key: String, value: Bytes) -> bool {
        let now = Instant::now();
        let key = Key::from(key);
        // An expired entry is as good as none (a lookup would remove it).
        self.entries.remove_if(&key, |e| e.expires <= now);
        // A placeholder guard inserts only if nothing took the key since;
        // no waiting on another filler of the same key (it fills it).
        match self.entries.get_value_or_guard(&key, Some(Duration::ZERO)) {
            GuardResult::Guard(guard) => {
                let expires = now + jittered(self.ttl, self.jitter);
                guard.insert(Entry { value, expires }).is_ok()
            }
            GuardResult::Value(_) | GuardResult::Timeout => false,
        }
    }

    /// Stores `value` under `key` for this cache's TTL (with jitter).
    pub(crate) fn store(&self, key: String, value: Bytes) {
        let expires = Instant::now() + jittered(self.ttl, self.jitter);
        self.entries.insert(key.into(), Entry { value, expires });
    }

    fn count(&self, hits: u64, misses: u64) {
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        self.stats.misses.fetch_add(misses, Ordering::Relaxed);
    }
}

impl ScoreCache for LocalCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value = self.lookup(key, Instant::now());
        self.count(value.is_some() as u64, value.is_none() as u64);
        Ok(value)
    }

    async fn look_again(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        let now = Instant::now();
        Ok(keys.iter().map(|k| self.lookup(k, now)).collect())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        let now = Instant::now();
        let values: Vec<Option<Bytes>> = keys.iter().map(|k| self.lookup(k, now)).collect();
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.count(hits, keys.len() as u64 - hits);
        Ok(values)
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError> {
        self.store(key.to_owned(), value);
        Ok(())
    }

    async fn put_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        for (key, value) in entries {
            self.store(key, value);
        }
        Ok(())
    }

    async fn fill_many(&self, entries: Vec<(String, Bytes)>) -> Result<(), CacheError> {
        for (key, value) in entries {
            self.fill(key, value);
        }
        Ok(())
    }

    async fn invalidate(&self, keys: &[String]) -> Result<(), CacheError> {
        for key in keys {
            self.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn put_get_invalidate() {
        let cache = LocalCache::new(&CacheSettings::default());
        assert_eq!(cache.get("a").await.unwrap(), None);
        cache.put("a", b("1")).await.unwrap();
        cache
            .put_many(vec![("b".into(), b("2")), ("c".into(), b("3"))])
            .await
            .unwrap();
        let got = cache
            .get_many(&["a".into(), "x".into(), "c".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(b("1")), None, Some(b("3"))]);
        cache.invalidate(&["a".into()]).await.unwrap();
        assert_eq!(cache.get("a").await.unwrap(), None);
        let (hits, misses, errors) = cache.stats().snapshot();
        assert_eq!((hits, misses, errors), (2, 3, 0));
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl_and_a_rewrite_restarts_it() {
        let cache = LocalCache::with_ttl(Duration::from_millis(60), 0.0, 100);
        cache.put("a", b("1")).await.unwrap();
        cache.put("b", b("1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        cache.put("b", b("2")).await.unwrap();
        assert_eq!(cache.get("a").await.unwrap(), Some(b("1")));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.get("a").await.unwrap(), None, "past its TTL");
        assert_eq!(
            cache.get("b").await.unwrap(),
            Some(b("2")),
            "rewritten later"
        );
        assert_eq!(cache.entries.len(), 1, "the expired entry was removed");
    }

    #[tokio::test]
    async fn keys_of_any_length_are_found_and_told_apart() {
        let cache = LocalCache::new(&CacheSettings::default());
        // Around the inline limit, and one sharing a long prefix.
        let keys: Vec<String> = [0, 1, INLINE - 1, INLINE, INLINE + 1, 300]
            .iter()
            .map(|&n| "é".repeat(n / 2) + &"k".repeat(n % 2))
            .chain([
                format!("{}x", "k".repeat(INLINE)),
                format!("{}y", "k".repeat(INLINE)),
            ])
            .collect();
        for (i, k) in keys.iter().enumerate() {
            cache.put(k, b(&i.to_string())).await.unwrap();
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                cache.get(k).await.unwrap(),
                Some(b(&i.to_string())),
                "{k:?}"
            );
        }
        cache.invalidate(&keys[3..4]).await.unwrap();
        assert_eq!(cache.get(&keys[3]).await.unwrap(), None);
        assert_eq!(cache.get(&keys[4]).await.unwrap(), Some(b("4")));
    }

    #[tokio::test]
    async fn holds_about_its_capacity() {
        let cache = LocalCache::with_ttl(Duration::from_secs(60), 0.0, 1_000);
        for i in 0..10_000 {
            cache.put(&format!("k{i}"), b("v")).await.unwrap();
        }
        assert!(cache.entries.len() <= 1_100, "{}", cache.entries.len());
        assert_eq!(
            cache.get("k9999").await.unwrap(),
            Some(b("v")),
            "the newest stays"
        );
    }
}
