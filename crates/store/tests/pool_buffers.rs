//! A pooled PostgreSQL connection gives back the buffer a large message grew
//! once it is released. sqlx keeps a connection's buffers at the largest
//! message it ever carried, so without that every connection of the pool
//! ended up holding a recompute's multi-megabyte `COPY` chunk for good: the
//! slow memory growth the soak test found (docs/reliability.md, session 10).
//!
//! Counts the bytes this test process holds through its own global
//! allocator (the store crate does not bring Patron's).
//! Needs PostgreSQL (`DATABASE_URL`); skips without it unless
//! `PATRON_TEST_REQUIRE_BACKENDS=1`.

use std::{alloc::System, time::Duration};

use cap::Cap;
use patron_store::{DatabaseSettings, Storage};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const MIB: f64 = (1 << 20) as f64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_connection_gives_back_a_large_message_buffer() {
    let Some(url) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    else {
        assert!(
            std::env::var("PATRON_TEST_REQUIRE_BACKENDS").as_deref() != Ok("1"),
            "PATRON_TEST_REQUIRE_BACKENDS=1 but DATABASE_URL is not a PostgreSQL URL"
        );
        eprintln!("SKIPPED: pool buffer test (DATABASE_URL is not PostgreSQL)");
        return;
    };
    // One connection, so every statement below goes through the same one.
    let storage = Storage::connect_lazy(&DatabaseSettings {
        max_connections: 1,
        ..DatabaseSettings::with_url(url)
    })
    .await
    .expect("pool");
    let db = storage.connection();
    let length = |text: String| {
        db.query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT length($1::text)::int8 AS n",
            [text.into()],
        ))
    };
    // Connected, the statement prepared and cached.
    length("warm".into()).await.expect("query");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = ALLOCATOR.allocated() as f64;

    // An 8 MiB parameter: the connection's write buffer grows to hold it.
    let row = length("x".repeat(8 << 20))
        .await
        .expect("query")
        .expect("a row");
    let n: i64 = row.try_get("", "n").expect("n");
    assert_eq!(n, 8 << 20);
    drop(row);
    // The pool takes the connection back on a task of its own: give a
    // loaded machine up to 5 s.
    let mut held = f64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = ALLOCATOR.allocated() as f64 - before;
        if held < MIB {
            break;
        }
    }
    assert!(
        held < MIB,
        "the process still holds {:.1} MiB more than before the large message",
        held / MIB
    );
}
