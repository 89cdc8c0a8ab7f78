//! Population-wide calls (a recompute, a model fit, the cohort, churn and
//! product reports) each read the whole read model into memory for a
//! moment: about half a gigabyte to a gigabyte and a half at a million
//! customers. Without a bound, a few analysts asking at once would take a
//! replica past its memory limit, so at most `limits.population_calls` run
//! at once per process and the others wait their turn (first come, first
//! served) within their deadline. Waiting, not refusing: the calls are rare
//! and a report that arrives during a recompute should still be answered.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// The per-process bound on population-wide calls.
#[derive(Clone)]
pub struct PopulationGate {
    /// None: unbounded (`limits.population_calls = 0`).
    slots: Option<Arc<Semaphore>>,
    metrics: Metrics,
}

/// A running population-wide call's slot, given back when dropped.
pub struct PopulationSlot {
    _permit: Option<OwnedSemaphorePermit>,
    metrics: Metrics,
}

impl Drop for PopulationSlot {
    fn drop(&mut self) {
        self.metrics.population_call(-1, 0);
    }
}

/// Counts a call as waiting until it gets its slot or goes away.
struct Waiting(Metrics);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.population_call(0, -1);
    }
}

impl PopulationGate {
    /// At most `limit` calls at once; 0 for no bound.
    pub fn new(limit: u32, metrics: Metrics) -> Self {
        Self {
            slots: (limit > 0).then(|| Arc::new(Semaphore::new(limit as usize))),
            metrics,
        }
    }

    /// Waits for a slot. Dropping the future (the caller went away, its
    /// deadline passed) leaves the queue.
    pub async fn enter(&self) -> PopulationSlot {
        let permit = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.metrics.population_waited();
                    self.metrics.population_call(0, 1);
                    let _waiting = Waiting(self.metrics.clone());
                    // The semaphore is never closed.
                    Arc::clone(slots).acquire_owned().await.ok()
                }
            },
        };
        self.metrics.population_call(1, 0);
        PopulationSlot {
            _permit: permit,
            metrics: self.metrics.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gauges(metrics: &Metrics) -> (String, String, String) {
        let text = metrics.render();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("absent")
                .to_owned()
        };
        (
            value("patron_population_calls_running "),
            value("patron_population_calls_waiting "),
            value("patron_population_calls_waited_total "),
        )
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_wait_for_a_slot_in_order() {
        let metrics = crate::metrics::tests::metrics().await;
        let gate = PopulationGate::new(1, metrics.clone());
        let first = gate.enter().await;
        assert_eq!(gauges(&metrics), ("1".into(), "0".into(), "0".into()));
        let second = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the slot is taken");
        assert_eq!(gauges(&metrics), ("1".into(), "1".into(), "1".into()));
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the freed slot goes to the waiting call")
            .unwrap();
        assert_eq!(gauges(&metrics), ("1".into(), "0".into(), "1".into()));
        // A waiting call that goes away leaves the queue.
        let gone = tokio::time::timeout(Duration::from_millis(20), gate.enter()).await;
        assert!(gone.is_err());
        assert_eq!(gauges(&metrics), ("1".into(), "0".into(), "2".into()));
        drop(second);
        assert_eq!(gauges(&metrics).0, "0");
        let _again = gate.enter().await;
    }

    #[tokio::test]
    async fn zero_means_no_bound() {
        let metrics = crate::metrics::tests::metrics().await;
        let gate = PopulationGate::new(0, metrics.clone());
        let slots: Vec<PopulationSlot> =
            futures::future::join_all((0..5).map(|_| gate.enter())).await;
        assert_eq!(gauges(&metrics), ("5".into(), "0".into(), "0".into()));
        drop(slots);
        assert_eq!(gauges(&metrics).0, "0");
    }
}
