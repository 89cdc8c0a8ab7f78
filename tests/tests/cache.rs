//! The score cache against a real Redis.

use std::time::{Duration, Instant};

use patron_cache::{
    Bytes, Cache, CacheError, CacheSettings, RedisCache, RedisSettings, ScoreCache,
};
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
    cache.put("a", Bytes::from_static(b"one")).await.unwrap();
    cache
        .put_many(vec![
            ("b".into(), Bytes::from_static(b"two")),
            ("c".into(), Bytes::from_static(b"three")),
        ])
        .await
        .unwrap();
    let got = cache
        .get_many(&["a".into(), "x".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(Bytes::from_static(b"one")),
            None,
            Some(Bytes::from_static(b"three"))
        ]
    );

    // The TTL is between ttl and ttl x (1 + jitter).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(settings.hash_of("b"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((99_000..=110_000).contains(&pttl), "pttl {pttl}");

    cache.invalidate(&["a".into()]).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    let (hits, misses, errors) = cache.stats().snapshot();
    assert_eq!((hits, misses, errors), (2, 3, 0));
}

/// A fill (a read that missed, loaded from the store) adds what is absent
/// and never replaces a write that landed meanwhile; a later write replaces
/// a filled entry.
async fn fill_keeps_writes(cache: &impl ScoreCache) {
    let b = Bytes::from_static;
    cache.put("k", b(b"new")).await.unwrap();
    cache
        .fill_many(vec![("k".into(), b(b"old")), ("j".into(), b(b"loaded"))])
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b(b"new")));
    assert_eq!(cache.get("j").await.unwrap(), Some(b(b"loaded")));
    cache.put("j", b(b"written")).await.unwrap();
    cache
        .fill_many(vec![("j".into(), b(b"loaded again"))])
        .await
        .unwrap();
    assert_eq!(cache.get("j").await.unwrap(), Some(b(b"written")));
}

#[tokio::test]
async fn a_fill_never_replaces_a_written_entry() {
    let local = Cache::from_settings(&RedisSettings::default(), &CacheSettings::default());
    assert_eq!(local.backend_name(), "local");
    fill_keeps_writes(&local).await;

    let Some(url) = redis_url() else {
        return skip("Redis fill test", "REDIS_URL is not set");
    };
    let settings = redis_settings(&url);
    let redis = connected(&settings, &CacheSettings::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.near_tier_live() {
        assert!(Instant::now() < deadline, "the near tier did not go live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fill_keeps_writes(&redis).await;
    // Redis itself holds the writes (not only this replica's near tier), and
    // a hash a fill created expires like any other.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (key, want) in [("k", "new"), ("j", "written")] {
        let got: String = redis::cmd("HGET")
            .arg(settings.hash_of(key))
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(got, want);
    }
    redis
        .fill_many(vec![("filled-only".into(), Bytes::from_static(b"x"))])
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(settings.hash_of("filled-only"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0, "pttl {pttl}");
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
        assert!(cache.put("k", Bytes::from_static(b"1")).await.is_err());
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
    cache.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(
        cache.get("k").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
}

/// Two replicas' caches on one Redis: each serves hot keys from its near
/// tier, and a write on one evicts the key from the other's near tier at
/// once (pub/sub), long before the near TTL would.
#[tokio::test]
async fn a_write_on_one_replica_evicts_the_near_tier_of_the_others() {
    let Some(url) = redis_url() else {
        return skip("Redis cache test", "REDIS_URL is not set");
    };
    let settings = redis_settings(&url);
    let cache_settings = CacheSettings {
        near_ttl_ms: 600_000,
        ..CacheSettings::default()
    };
    let (a, b) = (
        connected(&settings, &cache_settings).await,
        connected(&settings, &cache_settings).await,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.near_tier_live() && b.near_tier_live()) {
        assert!(
            Instant::now() < deadline,
            "no invalidation subscription within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    a.put("k", Bytes::from_static(b"v1")).await.unwrap();
    assert_eq!(
        b.get("k").await.unwrap(),
        Some(Bytes::from_static(b"v1")),
        "from Redis"
    );
    assert_eq!(
        b.get("k").await.unwrap(),
        Some(Bytes::from_static(b"v1")),
        "from the near tier"
    );
    assert_eq!(
        b.stats()
            .near_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Replaced on A: B's near copy must go, though its TTL is ten minutes.
    let wait_for = |cache: &RedisCache, key: &'static str, want: Option<Bytes>| {
        let cache = cache.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = cache.get(key).await.unwrap();
                if got == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key}: still {got:?}, want {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    a.put("k", Bytes::from_static(b"v2")).await.unwrap();
    a.put("k2", Bytes::from_static(b"w")).await.unwrap();
    wait_for(&b, "k", Some(Bytes::from_static(b"v2"))).await;
    wait_for(&b, "k2", Some(Bytes::from_static(b"w"))).await;
    // Invalidated on A, both keys in one call: gone from B's near tier too.
    a.invalidate(&["k".into(), "k2".into()]).await.unwrap();
    wait_for(&b, "k", None).await;
    wait_for(&b, "k2", None).await;

    // A write too large to name its keys (a recompute) empties every near tier.
    b.put("other", Bytes::from_static(b"old")).await.unwrap();
    assert_eq!(
        b.get("other").await.unwrap(),
        Some(Bytes::from_static(b"old"))
    );
    let redis = redis::Client::open(url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(settings.hash_of("other"))
        .arg("other")
        .arg("new")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        b.get("other").await.unwrap(),
        Some(Bytes::from_static(b"old")),
        "B's near tier still holds it"
    );
    let many: Vec<(String, Bytes)> = (0..2_000)
        .map(|i| (format!("bulk-{i}"), Bytes::from_static(b"1")))
        .collect();
    a.put_many(many).await.unwrap();
    wait_for(&b, "other", Some(Bytes::from_static(b"new"))).await;
    // The writer's own near tier never serves what it did not write last.
    a.put("mine", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(a.get("mine").await.unwrap(), Some(Bytes::from_static(b"1")));
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
) -> T {
    cmd.query_async(conn).await.unwrap()
}

#[tokio::test]
async fn entries_share_hashes_whose_ttl_a_later_write_does_not_extend() {
    let Some(url) = redis_url() else {
        return skip("Redis cache test", "REDIS_URL is not set");
    };
    let settings = RedisSettings {
        buckets: 3,
        ..redis_settings(&url)
    };
    let cache_settings = CacheSettings {
        ttl_secs: 100,
        ttl_jitter: 0.0,
        near_ttl_ms: 0,
        ..CacheSettings::default()
    };
    let cache = connected(&settings, &cache_settings).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // A bulk write (more keys than are named to other replicas, several
    // round trips, hashes split over several HSETs), then a mixed read.
    let entries: Vec<(String, Bytes)> = (0..2_600)
        .map(|i| (format!("k{i}"), Bytes::from(format!("v{i}"))))
        .collect();
    cache.put_many(entries).await.unwrap();
    let keys: Vec<String> = (0..2_610).rev().map(|i| format!("k{i}")).collect();
    let got = cache.get_many(&keys).await.unwrap();
    for (key, value) in keys.iter().zip(&got) {
        let i: usize = key[1..].parse().unwrap();
        let expected = (i < 2_600).then(|| Bytes::from(format!("v{i}")));
        assert_eq!(value, &expected, "{key}");
    }
    let hashes: Vec<String> = query(
        &mut conn,
        redis::cmd("KEYS").arg(format!("{}*", settings.key_prefix)),
    )
    .await;
    assert_eq!(hashes.len(), 3, "{hashes:?}");

    // A hash's TTL is set when it is created and never extended: an entry
    // lives at most the TTL after it was written.
    let hash = settings.hash_of("k1");
    let _: () = query(&mut conn, redis::cmd("PEXPIRE").arg(&hash).arg(5_000)).await;
    cache.put("k1", Bytes::from_static(b"newer")).await.unwrap();
    let pttl: i64 = query(&mut conn, redis::cmd("PTTL").arg(&hash)).await;
    assert!((1..=5_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(
        cache.get("k1").await.unwrap(),
        Some(Bytes::from_static(b"newer"))
    );

    // A hash that expired comes back with a TTL of its own.
    let _: () = query(&mut conn, redis::cmd("DEL").arg(&hash)).await;
    cache.put("k1", Bytes::from_static(b"again")).await.unwrap();
    let pttl: i64 = query(&mut conn, redis::cmd("PTTL").arg(&hash)).await;
    assert!((99_000..=100_000).contains(&pttl), "pttl {pttl}");

    let sibling = (2..2_600)
        .map(|i| format!("k{i}"))
        .find(|k| settings.hash_of(k) == hash)
        .unwrap();
    cache
        .put(&sibling, Bytes::from_static(b"sib"))
        .await
        .unwrap();
    cache.invalidate(&["k1".into()]).await.unwrap();
    assert_eq!(cache.get("k1").await.unwrap(), None);
    assert_eq!(
        cache.get(&sibling).await.unwrap(),
        Some(Bytes::from_static(b"sib")),
        "an invalidation takes one entry out of its hash, not the hash"
    );
    let _: () = query(&mut conn, redis::cmd("DEL").arg(&hashes)).await;
}

#[tokio::test]
async fn concurrent_reads_share_round_trips_and_each_gets_its_own_value() {
    let Some(url) = redis_url() else {
        return skip("Redis cache test", "REDIS_URL is not set");
    };
    let settings = redis_settings(&url);
    let cache_settings = CacheSettings {
        near_ttl_ms: 0, // every read goes to Redis
        ..CacheSettings::default()
    };
    let cache = connected(&settings, &cache_settings).await;
    let entries: Vec<(String, Bytes)> = (0..300)
        .map(|i| (format!("k{i}"), Bytes::from(format!("v{i}"))))
        .collect();
    cache.put_many(entries).await.unwrap();
    let stats = cache.stats().clone();
    let trips = || stats.redis_reads.load(std::sync::atomic::Ordering::Relaxed);
    let before = trips();

    // 400 reads at once (one task, so all are queued before any answer
    // comes back): keys of many hashes, repeated keys and absent ones.
    let keys: Vec<String> = (0..400).map(|i| format!("k{}", (i * 7) % 350)).collect();
    let got = futures::future::join_all(keys.iter().map(|k| cache.get(k))).await;
    for (key, value) in keys.iter().zip(got) {
        let i: usize = key[1..].parse().unwrap();
        let expected = (i < 300).then(|| Bytes::from(format!("v{i}")));
        assert_eq!(value.unwrap(), expected, "{key}");
    }
    // The first read went alone; the 399 that queued behind it shared the
    // next round trip.
    assert_eq!(trips() - before, 2);
    // One read in flight at a time goes alone, each in its own round trip.
    for key in ["k1", "k2", "nothing"] {
        cache.get(key).await.unwrap();
    }
    assert_eq!(trips() - before, 5);
    let (hits, misses, errors) = stats.snapshot();
    assert_eq!((hits + misses, errors), (403, 0));
}
