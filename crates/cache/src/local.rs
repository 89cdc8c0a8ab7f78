//! In-process cache (moka): the whole cache when no Redis is configured,
//! and the short-lived near tier in front of Redis when one is.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache as Moka};

use crate::{CacheError, CacheSettings, CacheStats, ScoreCache, jittered};

#[derive(Clone)]
pub struct LocalCache {
    entries: Moka<String, Arc<[u8]>>,
    stats: Arc<CacheStats>,
}

struct JitteredTtl {
    ttl: Duration,
    jitter: f64,
}

impl Expiry<String, Arc<[u8]>> for JitteredTtl {
    fn expire_after_create(&self, _: &String, _: &Arc<[u8]>, _: Instant) -> Option<Duration> {
        Some(jittered(self.ttl, self.jitter))
    }

    fn expire_after_update(
        &self,
        _: &String,
        _: &Arc<[u8]>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(jittered(self.ttl, self.jitter))
    }
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
        let entries = Moka::builder()
            .max_capacity(capacity)
            .expire_after(JitteredTtl { ttl, jitter })
            .build();
        Self {
            entries,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    fn count(&self, found: bool) {
        let counter = if found {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl ScoreCache for LocalCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let value = self.entries.get(key).await.map(|v| v.to_vec());
        self.count(value.is_some());
        Ok(value)
    }

    async fn look_again(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.entries.get(key).await.map(|v| v.to_vec()))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), CacheError> {
        self.entries.insert(key.to_owned(), value.into()).await;
        Ok(())
    }

    async fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        for (key, value) in entries {
            self.entries.insert(key, value.into()).await;
        }
        Ok(())
    }

    async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        self.entries.invalidate(key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_invalidate() {
        let cache = LocalCache::new(&CacheSettings::default());
        assert_eq!(cache.get("a").await.unwrap(), None);
        cache.put("a", b"1".to_vec()).await.unwrap();
        cache
            .put_many(vec![
                ("b".into(), b"2".to_vec()),
                ("c".into(), b"3".to_vec()),
            ])
            .await
            .unwrap();
        let got = cache
            .get_many(&["a".into(), "x".into(), "c".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
        cache.invalidate("a").await.unwrap();
        assert_eq!(cache.get("a").await.unwrap(), None);
        let (hits, misses, errors) = cache.stats().snapshot();
        assert_eq!((hits, misses, errors), (2, 3, 0));
    }
}
