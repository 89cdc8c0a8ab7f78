//! Faults injected into real dependencies under traffic: a Redis started by
//! the test is hung (SIGSTOP), killed (SIGKILL) and restarted while clients
//! keep reading scores. No call may fail, none may wait on the dead cache
//! for long, and the cache is used again once Redis is back.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patron_tests::{
    Backend, TestApp, metric,
    pb::scoring::{self as spb},
    skip,
};
use rand::{Rng, SeedableRng};

/// A throwaway Redis on its own port.
struct RedisProcess {
    child: Option<Child>,
}

impl RedisProcess {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// What the clients saw during one phase.
#[derive(Default, Debug)]
struct Phase {
    calls: u64,
    failures: Vec<String>,
    slowest: Duration,
}

/// Reads random scores from 4 clients for `length`.
async fn traffic(app: &TestApp, ids: &[String], length: Duration) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let mut scoring = app.scoring();
        let ids = ids.to_vec();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c);
            let mut phase = Phase::default();
            while !stop.load(Ordering::Relaxed) {
                let id = ids[rng.random_range(0..ids.len())].clone();
                let started = Instant::now();
                let result = scoring
                    .get_score(spb::GetScoreRequest { customer_id: id })
                    .await;
                phase.calls += 1;
                phase.slowest = phase.slowest.max(started.elapsed());
                if let Err(status) = result {
                    phase
                        .failures
                        .push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
            phase
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Phase::default();
    for client in clients {
        let p = client.await.unwrap();
        all.calls += p.calls;
        all.failures.extend(p.failures);
        all.slowest = all.slowest.max(p.slowest);
    }
    all
}

fn cache_counters(text: &str) -> (f64, f64) {
    (
        metric(text, "patron_cache_hits_total").unwrap_or(0.0),
        metric(text, "patron_cache_fallbacks_total").unwrap_or(0.0),
    )
}

async fn redis_hung_killed_and_restarted_under_traffic(backend: Backend) {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("Redis fault test", "redis-server is not installed");
        return;
    }
    let port = free_port();
    let mut redis = RedisProcess::start(port).expect("start redis-server");
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.redis.url = Some(format!("redis://127.0.0.1:{port}").into());
        s.redis.response_timeout_ms = 50;
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    else {
        return;
    };
    let ids = patron_tests::seed_buyers(&app, 200, 11).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if app
            .scoring()
            .fit_model(spb::FitModelRequest::default())
            .await
            .is_ok()
        {
            let mut r = app
                .scoring()
                .recompute_scores(spb::RecomputeScoresRequest::default())
                .await
                .unwrap()
                .into_inner();
            while r.message().await.unwrap().is_some() {}
            // Scoring's read model follows the feed: recompute until every
            // customer's purchases had arrived.
            let mut all_scored = true;
            for id in &ids {
                if app
                    .scoring()
                    .get_score(spb::GetScoreRequest {
                        customer_id: id.clone(),
                    })
                    .await
                    .is_err()
                {
                    all_scored = false;
                    break;
                }
            }
            if all_scored {
                break;
            }
        }
        assert!(Instant::now() < deadline, "scores never became available");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let healthy = traffic(&app, &ids, Duration::from_secs(2)).await;
    let (hits_before, fallbacks_before) = cache_counters(&app.metrics().await);
    assert!(hits_before > 0.0, "the cache serves hits while Redis is up");

    redis.signal("-STOP");
    let hung = traffic(&app, &ids, Duration::from_secs(2)).await;
    redis.signal("-CONT");

    redis.kill();
    let dead = traffic(&app, &ids, Duration::from_secs(2)).await;
    let (_, fallbacks_dead) = cache_counters(&app.metrics().await);
    assert!(
        fallbacks_dead > fallbacks_before,
        "calls fell back to the store while Redis was down"
    );

    let _restarted = RedisProcess::start(port).expect("restart redis-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered;
    loop {
        recovered = traffic(&app, &ids, Duration::from_millis(500)).await;
        let (hits, _) = cache_counters(&app.metrics().await);
        if hits > hits_before + 10.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not used again after Redis came back"
        );
    }

    eprintln!(
        "faults | calls | failures | slowest\n\
         healthy | {} | {} | {:?}\n\
         redis hung (SIGSTOP) | {} | {} | {:?}\n\
         redis killed | {} | {} | {:?}\n\
         redis restarted | {} | {} | {:?}",
        healthy.calls,
        healthy.failures.len(),
        healthy.slowest,
        hung.calls,
        hung.failures.len(),
        hung.slowest,
        dead.calls,
        dead.failures.len(),
        dead.slowest,
        recovered.calls,
        recovered.failures.len(),
        recovered.slowest,
    );
    for (name, phase) in [
        ("healthy", &healthy),
        ("hung", &hung),
        ("dead", &dead),
        ("recovered", &recovered),
    ] {
        assert!(phase.calls > 0, "{name}: no calls made");
        assert!(
            phase.failures.is_empty(),
            "{name}: {:?}",
            &phase.failures[..phase.failures.len().min(5)]
        );
        // A bound, not a benchmark: no call waits on the dead cache for
        // long (the Redis timeout is 50 ms; this allows a very busy machine).
        assert!(
            phase.slowest < Duration::from_secs(3),
            "{name}: a call took {:?}",
            phase.slowest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_on_sqlite() {
    redis_hung_killed_and_restarted_under_traffic(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_on_postgres() {
    redis_hung_killed_and_restarted_under_traffic(Backend::Postgres).await;
}
