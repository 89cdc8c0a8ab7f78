//! The score cache against a real Redis.

use std::time::{Duration, Instant};

use patron_cache::{Cache, CacheError, CacheSettings, RedisCache, RedisSettings, ScoreCache};
use patron_tests::{redis_url, skip};
use secrecy::SecretString;

fn redis_settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: Some(SecretString::from(url.to_owned())),
        // Unique per test run so parallel tests never see each other's keys.
        key_prefix: format!("patron-test:{}:", uuid::Uuid::new_v4().simple()),
        ..RedisSettings::default()
    }
}

async fn connected(settings: &RedisSettings, cache: &CacheSettings) -> RedisCache {
    let redis = RedisCache::connect_in_background(settings, cache);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.is_connected() {
        assert!(
            Instant::now() < deadline,
            "redis did not connect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis
}

#[tokio::test]
async fn redis_round_trip_with_jittered_ttl() {
    let Some(url) = redis_url() else {
        return skip("Redis cache test", "REDIS_URL is not set");
    };
    let settings = redis_settings(&url);
    let cache_settings = CacheSettings {
        ttl_secs: 100,
        ttl_jitter: 0.1,
        ..CacheSettings::default()
    };
    let cache = connected(&settings, &cache_settings).await;

    assert_eq!(cache.get("a").await.unwrap(), None);
    cache.put("a", b"one".to_vec()).await.unwrap();
    cache
        .put_many(vec![
            ("b".into(), b"two".to_vec()),
            ("c".into(), b"three".to_vec()),
        ])
        .await
        .unwrap();
    let got = cache
        .get_many(&["a".into(), "x".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(b"one".to_vec()), None, Some(b"three".to_vec())]
    );

    // The TTL is between ttl and ttl x (1 + jitter).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}b", settings.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((99_000..=110_000).contains(&pttl), "pttl {pttl}");

    cache.invalidate("a").await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    let (hits, misses, errors) = cache.stats().snapshot();
    assert_eq!((hits, misses, errors), (2, 3, 0));
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_and_is_counted() {
    let settings = redis_settings("redis://127.0.0.1:1");
    let cache = Cache::from_settings(&settings, &CacheSettings::default());
    assert_eq!(cache.backend_name(), "redis");
    let started = Instant::now();
    for _ in 0..100 {
        let err = cache.get("k").await.unwrap_err();
        assert!(
            matches!(err, CacheError::NotConnected | CacheError::Timeout),
            "{err:?}"
        );
        assert!(cache.put("k", vec![1]).await.is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "calls must not wait on a dead Redis"
    );
    assert_eq!(cache.stats().snapshot().2, 200);
}

#[tokio::test]
async fn without_redis_url_the_cache_is_in_process() {
    let cache = Cache::from_settings(&RedisSettings::default(), &CacheSettings::default());
    assert_eq!(cache.backend_name(), "local");
    cache.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v".to_vec()));
}
