//! Concurrent misses for one key share one load.
//!
//! When a hot entry expires, every request for it misses at once; without
//! coalescing each would read the store (a stampede). Here the first caller
//! for a key starts the load and the others wait for its result. The load
//! itself should look in the cache first: a caller arriving just after a
//! load finished then finds the value there, not in the store.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

type Flight<V> = Shared<BoxFuture<'static, V>>;

/// One load at a time per key.
pub struct SingleFlight<V: Clone> {
    inflight: Arc<Mutex<HashMap<String, Flight<V>>>>,
}

impl<V: Clone> Clone for SingleFlight<V> {
    fn clone(&self) -> Self {
        Self {
            inflight: self.inflight.clone(),
        }
    }
}

impl<V: Clone> Default for SingleFlight<V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// The result of `load` for `key`, shared with every concurrent caller
    /// for the same key. The load runs to completion even if the caller
    /// that started it goes away, as long as another is waiting.
    pub async fn run<F>(&self, key: &str, load: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flight, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(key) {
                Some(flight) => (flight.clone(), None),
                None => {
                    let flight = load().boxed().shared();
                    inflight.insert(key.to_owned(), flight.clone());
                    (
                        flight,
                        Some(Forget {
                            key,
                            flights: &self.inflight,
                        }),
                    )
                }
            }
        };
        let value = flight.await;
        drop(leader);
        value
    }

    /// Loads in flight (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Removes the leader's entry when it finishes or is dropped, so a later
/// miss starts a fresh load instead of reusing an old result.
struct Forget<'a, V: Clone> {
    key: &'a str,
    flights: &'a Mutex<HashMap<String, Flight<V>>>,
}

impl<V: Clone> Drop for Forget<'_, V> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.flights.lock() {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_later_ones_load_again() {
        let flights = SingleFlight::<u32>::default();
        let loads = Arc::new(AtomicUsize::new(0));
        let load = || {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            }
        };
        let results = futures::future::join_all((0..20).map(|_| flights.run("k", load))).await;
        assert_eq!(results, vec![7; 20]);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run("k", load).await, 7);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "a finished load is not reused"
        );
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_strand_the_key() {
        let flights = SingleFlight::<u32>::default();
        let slow = flights.run("k", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(10), slow)
                .await
                .is_err()
        );
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run("k", || async { 2 }).await, 2);
    }
}
