//! Concurrent misses for one key share one load.
//!
//! When a hot entry expires, every request for it misses at once; without
//! coalescing each would read the store (a stampede). Here the first caller
//! for a key starts the load and the others wait for its result. A caller
//! with many keys (a batch) waits for the loads already running for some of
//! them and starts one load for all the rest, so concurrent batches that
//! overlap read each key once, and a batch still reads the store once. The
//! load itself should look in the cache first: a caller arriving just after
//! a load finished then finds the value there, not in the store.

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

/// One load at a time per key. A load's result `V` covers every key it was
/// started for (e.g. a map from key to value).
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
    /// The results of the loads that cover `keys`: one load started here with
    /// the keys no load was running for (`load` gets them, each once), plus
    /// each load already running for the others, each result once. Every
    /// concurrent caller for a key shares its load's result. A load runs to
    /// completion even if the caller that started it goes away, as long as
    /// another is waiting.
    pub async fn run<F>(&self, keys: &[String], load: impl FnOnce(Vec<String>) -> F) -> Vec<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flights, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut followed: Vec<Flight<V>> = Vec::new();
            let mut fresh: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for key in keys {
                if !seen.insert(key.as_str()) {
                    continue; // a repeated key
                }
                match inflight.get(key) {
                    // Each flight once: several keys may share one.
                    Some(f) => {
                        if !followed.iter().any(|g| g.ptr_eq(f)) {
                            followed.push(f.clone());
                        }
                    }
                    None => fresh.push(key.clone()),
                }
            }
            let leader = (!fresh.is_empty()).then(|| {
                let flight = load(fresh.clone()).boxed().shared();
                for key in &fresh {
                    inflight.insert(key.clone(), flight.clone());
                }
                followed.push(flight);
                Forget {
                    keys: fresh,
                    flights: &self.inflight,
                }
            });
            (followed, leader)
        };
        let values = futures::future::join_all(flights).await;
        drop(leader);
        values
    }

    /// Loads in flight (for tests and metrics): keys being loaded.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Removes the leader's keys when its load finishes or the leader is
/// dropped, so a later miss starts a fresh load instead of reusing an old
/// result.
struct Forget<'a, V: Clone> {
    keys: Vec<String>,
    flights: &'a Mutex<HashMap<String, Flight<V>>>,
}

impl<V: Clone> Drop for Forget<'_, V> {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.flights.lock() {
            for key in &self.keys {
                flights.remove(key);
            }
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

    fn keys(ks: &[&str]) -> Vec<String> {
        ks.iter().map(|k| k.to_string()).collect()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_later_ones_load_again() {
        let flights = SingleFlight::<u32>::default();
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |_| {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            }
        };
        let k = keys(&["k"]);
        let results = futures::future::join_all((0..20).map(|_| flights.run(&k, load))).await;
        assert_eq!(results, vec![vec![7]; 20]);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run(&k, load).await, vec![7]);
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "a finished load is not reused"
        );
    }

    #[tokio::test]
    async fn overlapping_batches_load_each_key_once() {
        // A result is the keys its load was given.
        let flights = SingleFlight::<Vec<String>>::default();
        let load = |ks: Vec<String>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ks
        };
        let abc = keys(&["a", "b", "c"]);
        let first = flights.run(&abc, load);
        let second = async {
            // Starts while the first load runs.
            tokio::time::sleep(Duration::from_millis(10)).await;
            flights.run(&keys(&["b", "d", "c", "d"]), load).await
        };
        let (first, mut second) = tokio::join!(first, second);
        assert_eq!(first, vec![keys(&["a", "b", "c"])]);
        second.sort();
        assert_eq!(
            second,
            vec![keys(&["a", "b", "c"]), keys(&["d"])],
            "b and c come from the first batch's load; d (asked twice) is loaded once"
        );
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_strand_the_key() {
        let flights = SingleFlight::<u32>::default();
        let k = keys(&["k", "l"]);
        let slow = flights.run(&k, |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(10), slow)
                .await
                .is_err()
        );
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run(&k, |_| async { 2 }).await, vec![2]);
    }
}
