use secrecy::SecretString;
use serde::Deserialize;

/// `redis.*` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db` (also `REDIS_URL`). Unset: in-process cache.
    pub url: Option<SecretString>,
    /// Bound on every Redis call; past it the caller is served from the store.
    pub response_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            response_timeout_ms: 50,
            connect_timeout_ms: 1_000,
            key_prefix: "patron:".to_owned(),
        }
    }
}

/// `cache.*` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Time to live of a cached score.
    pub ttl_secs: u64,
    /// Extra random TTL, as a fraction of `ttl_secs` (0.1 = up to +10%).
    pub ttl_jitter: f64,
    /// Entries held by the in-process cache.
    pub local_capacity: u64,
    /// With Redis: how long the in-process near tier in front of it keeps a
    /// score (0 turns the near tier off). Other replicas' writes evict
    /// entries at once through Redis pub/sub; this bounds staleness when
    /// an invalidation is lost.
    pub near_ttl_ms: u64,
    /// With Redis: entries held by the near tier.
    pub near_capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 3_600,
            ttl_jitter: 0.1,
            local_capacity: 1_000_000,
            near_ttl_ms: 5_000,
            near_capacity: 100_000,
        }
    }
}
