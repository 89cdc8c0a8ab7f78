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
    /// Redis hashes the entries are spread over (see [`RedisSettings::hash_of`]).
    pub buckets: u32,
}

impl RedisSettings {
    /// The Redis hash holding `key`'s entry (its field is `key` itself):
    /// `<key_prefix>bucket:<n>`, n = FNV-1a(`key`) mod `buckets`. The hash
    /// function is written here, not taken from a library or seeded, so
    /// every replica and every release agree on where a key lives.
    pub fn hash_of(&self, key: &str) -> String {
        hash_name(&self.key_prefix, bucket_of(key, self.buckets))
    }
}

pub(crate) fn bucket_of(key: &str, buckets: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(buckets.max(1))) as u32
}

pub(crate) fn hash_name(prefix: &str, bucket: u32) -> String {
    format!("{prefix}bucket:{bucket}")
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            response_timeout_ms: 50,
            connect_timeout_ms: 1_000,
            key_prefix: "patron:".to_owned(),
            buckets: 1_024,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas of different releases must agree on where a key lives, so
    /// the function is pinned: FNV-1a's published value for "a" is
    /// 0xaf63dc4c8601ec8c.
    #[test]
    fn a_key_always_lives_in_the_same_hash() {
        assert_eq!(
            bucket_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(bucket_of("a", 1_024), 140);
        assert_eq!(bucket_of("", 1_024), 805);
        assert_eq!(
            bucket_of("score:0190a4b2-7c1e-7a2b-9f00-123456789abc", 1_024),
            442
        );
        assert_eq!(bucket_of("anything", 0), 0, "0 buckets means one");
        let settings = RedisSettings {
            key_prefix: "p:".into(),
            ..RedisSettings::default()
        };
        assert_eq!(settings.hash_of("a"), "p:bucket:140");
    }
}
