//! Concurrent single-key reads share Redis round trips ("smart batching").
//!
//! A read that finds no round trip in flight goes at once, alone: one call
//! in flight pays no wait. Reads that arrive while a round trip is in flight
//! queue up, and when it returns they all go together in the next one. So
//! under load one pipelined round trip serves many callers, which saves the
//! per-command work of the client and of Redis (and the CPU both share with
//! the service), and a batch never waits on a timer: its size is simply what
//! arrived during the last round trip.
//!
//! There is no background task. The caller that runs a round trip (the
//! leader) answers the others, then passes the lead to the oldest queued
//! caller, which runs the next round trip from its own task. A leader that
//! goes away (its request cancelled) passes the lead on as well, with the
//! callers it had not answered yet, so nobody is left waiting.
//!
//! Deadlines: each round trip must end by its oldest member's arrival (the
//! leader's) plus the timeout, so no caller waits longer than the timeout
//! in all, however long it queued.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::CacheError;

type Answer = Result<Option<Bytes>, CacheError>;

/// What a queued caller is told: its answer, or to lead the next round trip.
enum Turn {
    Answer(Answer),
    Lead(Lead),
}

struct Waiter {
    key: String,
    reply: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct State {
    /// A caller holds the lead (a round trip is in flight or about to be).
    led: bool,
    queue: Vec<Waiter>,
}

#[derive(Default)]
pub(crate) struct ReadBatcher {
    state: Arc<Mutex<State>>,
}

/// The lead: held by exactly one caller while `State::led` is set, with the
/// callers it is to answer. Dropping it (answered or not) passes it on.
struct Lead {
    state: Option<Arc<Mutex<State>>>,
    waiters: Vec<Waiter>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Lead {
    /// Hands the lead to the oldest caller still waiting (the unanswered
    /// members of this round trip first, then the queue), or frees it.
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return; // an emptied husk (see below)
        };
        let mut waiters = std::mem::take(&mut self.waiters);
        let mut guard = lock(&state);
        waiters.append(&mut guard.queue);
        while !waiters.is_empty() {
            let next = waiters.remove(0);
            let lead = Lead {
                state: Some(state.clone()),
                waiters: std::mem::take(&mut waiters),
            };
            let Err(turn) = next.reply.send(Turn::Lead(lead)) else {
                return;
            };
            // That caller went away: take the lead back, emptied so that
            // dropping it here does not lock the state again.
            if let Turn::Lead(mut back) = turn {
                back.state = None;
                waiters = std::mem::take(&mut back.waiters);
            }
        }
        guard.led = false;
    }
}

impl ReadBatcher {
    /// Reads `key` with `fetch`, alone or with whatever other reads queued
    /// meanwhile. `fetch` gets the keys of one round trip and how long it
    /// may take (zero when queueing used up the timeout), and answers one
    /// value per key, in order.
    pub(crate) async fn read<F, Fut>(&self, key: &str, timeout: Duration, fetch: F) -> Answer
    where
        F: FnOnce(Vec<String>, Duration) -> Fut,
        Fut: Future<Output = Result<Vec<Option<Bytes>>, CacheError>>,
    {
        let arrived = Instant::now();
        // (The guard must not live across the wait: decide, then wait.)
        let queued = {
            let mut state = lock(&self.state);
            if state.led {
                let (reply, turn) = oneshot::channel();
                state.queue.push(Waiter {
                    key: key.to_owned(),
                    reply,
                });
                Some(turn)
            } else {
                state.led = true;
                None
            }
        };
        let mut lead = match queued {
            None => Lead {
                state: Some(self.state.clone()),
                waiters: Vec::new(),
            },
            Some(turn) => match turn.await {
                Ok(Turn::Answer(answer)) => return answer,
                Ok(Turn::Lead(lead)) => lead,
                // Unreachable: a lead dropped with us in it passes itself
                // on. Treated as a failed read all the same.
                Err(_) => return Err(CacheError::Backend("read batch abandoned".into())),
            },
        };
        // The lead goes to the oldest caller waiting, so this caller's time
        // left is the least of the round trip's members'.
        let left = timeout.saturating_sub(arrived.elapsed());
        let mut keys = Vec::with_capacity(lead.waiters.len() + 1);
        keys.push(key.to_owned());
        keys.extend(lead.waiters.iter().map(|w| w.key.clone()));
        // (Zero when queueing took it all: `fetch` fails that at once,
        // counted like any timeout.)
        let answers = fetch(keys, left).await;
        // (Cancelled while fetching: `lead` drops with its waiters, who
        // then run the next round trip themselves.)
        let mine = match answers {
            Ok(values) if values.len() == lead.waiters.len() + 1 => {
                let mut values = values.into_iter();
                let mine = values.next().expect("one value per key");
                for (waiter, value) in lead.waiters.drain(..).zip(values) {
                    let _ = waiter.reply.send(Turn::Answer(Ok(value)));
                }
                Ok(mine)
            }
            Ok(values) => {
                let e = CacheError::Backend(format!(
                    "{} values for {} keys",
                    values.len(),
                    lead.waiters.len() + 1
                ));
                Self::fail(&mut lead, &e);
                Err(e)
            }
            Err(e) => {
                Self::fail(&mut lead, &e);
                Err(e)
            }
        };
        drop(lead); // the next round trip starts now, led by another caller
        mine
    }

    fn fail(lead: &mut Lead, e: &CacheError) {
        for waiter in lead.waiters.drain(..) {
            let _ = waiter.reply.send(Turn::Answer(Err(e.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::join_all;
    use tokio::sync::Notify;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Answers each key with itself, after `gate` opens (when given),
    /// recording each round trip's keys.
    async fn echo(
        keys: Vec<String>,
        trips: &Mutex<Vec<Vec<String>>>,
        gate: Option<&Notify>,
    ) -> Result<Vec<Option<Bytes>>, CacheError> {
        trips.lock().unwrap().push(keys.clone());
        if let Some(gate) = gate {
            gate.notified().await;
        }
        Ok(keys.into_iter().map(|k| Some(Bytes::from(k))).collect())
    }

    fn value(answer: Answer) -> String {
        String::from_utf8(answer.unwrap().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_lone_read_goes_at_once_and_reads_queued_behind_it_share_the_next_trip() {
        let batcher = ReadBatcher::default();
        let trips = Mutex::new(Vec::new());
        let gate = Notify::new();
        let reads = (0..5).map(|i| {
            let key = format!("k{i}");
            let (batcher, trips, gate) = (&batcher, &trips, &gate);
            async move {
                let answer = batcher
                    .read(&key, SECOND, |keys, _| echo(keys, trips, Some(gate)))
                    .await;
                (key, value(answer))
            }
        });
        let all = join_all(reads);
        tokio::pin!(all);
        // Every read has arrived: the first is in flight, the others queued.
        assert!(futures::poll!(all.as_mut()).is_pending());
        assert_eq!(*trips.lock().unwrap(), vec![vec!["k0".to_owned()]]);
        gate.notify_one();
        // The second trip (led by the oldest queued read) carries the rest.
        while trips.lock().unwrap().len() < 2 {
            assert!(futures::poll!(all.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for (key, got) in all.await {
            assert_eq!(key, got, "each caller gets its own key's value");
        }
        let trips = trips.lock().unwrap().clone();
        assert_eq!(trips.len(), 2, "{trips:?}");
        assert_eq!(trips[1], ["k1", "k2", "k3", "k4"]);
        assert!(!lock(&batcher.state).led, "the lead is free again");
    }

    #[tokio::test]
    async fn a_failed_trip_fails_every_member_and_the_next_trip_still_runs() {
        let batcher = ReadBatcher::default();
        let gate = Notify::new();
        let trips = AtomicUsize::new(0);
        let reads = (0..4).map(|i| {
            let (batcher, gate, trips) = (&batcher, &gate, &trips);
            async move {
                batcher
                    .read(&format!("k{i}"), SECOND, |keys, _| async move {
                        let trip = trips.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        if trip == 1 {
                            Err(CacheError::Timeout)
                        } else {
                            Ok(keys.into_iter().map(|_| None).collect())
                        }
                    })
                    .await
            }
        });
        let all = join_all(reads);
        tokio::pin!(all);
        assert!(futures::poll!(all.as_mut()).is_pending());
        gate.notify_one();
        while trips.load(Ordering::SeqCst) < 2 {
            assert!(futures::poll!(all.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        let answers = all.await;
        assert!(matches!(answers[0], Ok(None)));
        for answer in &answers[1..] {
            assert!(matches!(answer, Err(CacheError::Timeout)), "{answer:?}");
        }
        // And the batcher is usable afterwards.
        let after = batcher
            .read("again", SECOND, |keys, _| async move {
                Ok(keys.into_iter().map(|k| Some(Bytes::from(k))).collect())
            })
            .await;
        assert_eq!(value(after), "again");
    }

    #[tokio::test]
    async fn a_cancelled_leader_passes_the_lead_to_the_callers_it_left() {
        let batcher = Arc::new(ReadBatcher::default());
        let trips = Arc::new(Mutex::new(Vec::new()));
        let stuck = Arc::new(Notify::new()); // never opened
        // The leader's round trip never ends...
        let leader = tokio::spawn({
            let (batcher, trips, stuck) = (batcher.clone(), trips.clone(), stuck.clone());
            async move {
                batcher
                    .read("first", SECOND, |keys, _| echo(keys, &trips, Some(&stuck)))
                    .await
            }
        });
        while trips.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // ...while two more reads queue behind it...
        let followers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|key| {
                let (batcher, trips) = (batcher.clone(), trips.clone());
                tokio::spawn(async move {
                    let answer = batcher
                        .read(key, SECOND, |keys, _| echo(keys, &trips, None))
                        .await;
                    (key, value(answer))
                })
            })
            .collect();
        while lock(&batcher.state).queue.len() < 2 {
            tokio::task::yield_now().await;
        }
        // ...and then the leader's request goes away.
        leader.abort();
        for follower in followers {
            let (key, got) = tokio::time::timeout(SECOND, follower)
                .await
                .expect("a queued read is not left waiting")
                .unwrap();
            assert_eq!(key, got);
        }
        assert!(!lock(&batcher.state).led);
    }

    #[tokio::test]
    async fn a_queued_read_that_went_away_is_skipped_when_the_lead_passes() {
        let batcher = ReadBatcher::default();
        let trips = Mutex::new(Vec::new());
        let gate = Notify::new();
        let first = batcher.read("first", SECOND, |keys, _| echo(keys, &trips, Some(&gate)));
        tokio::pin!(first);
        assert!(futures::poll!(first.as_mut()).is_pending());
        // Queued, then dropped before the lead could reach it.
        {
            let gone = batcher.read("gone", SECOND, |keys, _| echo(keys, &trips, None));
            tokio::pin!(gone);
            assert!(futures::poll!(gone.as_mut()).is_pending());
        }
        let next = batcher.read("next", SECOND, |keys, _| echo(keys, &trips, None));
        tokio::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending());
        gate.notify_one();
        assert_eq!(value(first.await), "first");
        assert_eq!(value(next.await), "next");
        assert!(!lock(&batcher.state).led);
    }

    #[tokio::test]
    async fn a_trip_gets_what_is_left_of_its_oldest_members_timeout() {
        let batcher = ReadBatcher::default();
        let gate = Notify::new();
        let budgets = Mutex::new(Vec::new());
        let timeout = Duration::from_millis(200);
        let read = |key: &'static str| {
            let (batcher, gate, budgets) = (&batcher, &gate, &budgets);
            async move {
                batcher
                    .read(key, timeout, |keys, left| async move {
                        budgets.lock().unwrap().push(left);
                        gate.notified().await;
                        Ok(keys.into_iter().map(|_| None).collect())
                    })
                    .await
            }
        };
        let first = read("first");
        tokio::pin!(first);
        assert!(futures::poll!(first.as_mut()).is_pending());
        let second = read("second");
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        gate.notify_one();
        first.await.unwrap();
        while budgets.lock().unwrap().len() < 2 {
            assert!(futures::poll!(second.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        second.await.unwrap();
        let budgets = budgets.lock().unwrap().clone();
        assert!(budgets[0] > Duration::from_millis(150), "{budgets:?}");
        // The second read queued 60 ms before its trip began.
        assert!(
            budgets[1] <= timeout - Duration::from_millis(60),
            "{budgets:?}"
        );
        // A trip whose members' time is all gone is given none.
        let late = batcher
            .read("late", Duration::ZERO, |_, left| async move {
                assert_eq!(left, Duration::ZERO);
                Err(CacheError::Timeout)
            })
            .await;
        assert!(matches!(late, Err(CacheError::Timeout)));
    }

    /// One caller of a random schedule: when it arrives, and when (if
    /// ever) its request is cancelled, in virtual milliseconds.
    #[derive(Debug, Clone)]
    struct Caller {
        arrives: u64,
        cancelled_at: Option<u64>,
    }

    fn callers() -> impl proptest::strategy::Strategy<Value = Vec<Caller>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (0..40u64, proptest::option::weighted(0.3, 0..60u64)).prop_map(|(arrives, cancel)| {
                Caller {
                    arrives,
                    cancelled_at: cancel.map(|c| arrives + c),
                }
            }),
            1..30,
        )
    }

    proptest::proptest! {
        /// Whatever the arrivals, round-trip times, failures and
        /// cancellations: at most one round trip is in flight, every caller
        /// that was not cancelled gets an answer (its own key's value, or
        /// its trip's failure), and the lead is free at the end.
        #[test]
        fn every_caller_that_stays_gets_its_own_answer(
            callers in callers(),
            trips in proptest::collection::vec((1..20u64, proptest::bool::weighted(0.2)), 64),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async move {
                let batcher = Arc::new(ReadBatcher::default());
                let trip = Arc::new(AtomicUsize::new(0));
                let in_flight = Arc::new(AtomicUsize::new(0));
                let trips = Arc::new(trips);
                let mut handles = Vec::new();
                for (i, caller) in callers.iter().enumerate() {
                    let (batcher, trip, in_flight, trips) =
                        (batcher.clone(), trip.clone(), in_flight.clone(), trips.clone());
                    let arrives = caller.arrives;
                    let read = tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(arrives)).await;
                        let key = format!("k{i}");
                        let answer = batcher
                            .read(&key, Duration::from_secs(60), |keys, _| async move {
                                struct Flying(Arc<AtomicUsize>);
                                impl Drop for Flying {
                                    fn drop(&mut self) {
                                        self.0.fetch_sub(1, Ordering::SeqCst);
                                    }
                                }
                                let before = in_flight.fetch_add(1, Ordering::SeqCst);
                                assert_eq!(before, 0, "two round trips in flight");
                                let _flying = Flying(in_flight.clone());
                                let n = trip.fetch_add(1, Ordering::SeqCst);
                                let (millis, fails) = trips[n % trips.len()];
                                tokio::time::sleep(Duration::from_millis(millis)).await;
                                if fails {
                                    Err(CacheError::Timeout)
                                } else {
                                    Ok(keys.into_iter().map(|k| Some(Bytes::from(k))).collect())
                                }
                            })
                            .await;
                        (key, answer)
                    });
                    let cancel = caller.cancelled_at.map(|at| {
                        let abort = read.abort_handle();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(at)).await;
                            abort.abort();
                        })
                    });
                    handles.push((read, cancel));
                }
                for (read, cancel) in handles {
                    let outcome = tokio::time::timeout(Duration::from_secs(3_600), read)
                        .await
                        .expect("a caller was left waiting");
                    match outcome {
                        Ok((key, Ok(value))) => {
                            assert_eq!(value, Some(Bytes::from(key)));
                        }
                        Ok((_, Err(e))) => assert!(matches!(e, CacheError::Timeout), "{e:?}"),
                        Err(join) => {
                            assert!(join.is_cancelled());
                            assert!(cancel.is_some(), "only a cancelled caller ends without an answer");
                        }
                    }
                }
                let state = lock(&batcher.state);
                assert!(!state.led && state.queue.is_empty());
            });
        }
    }
}
