//! An in-memory mirror of campaign's view, for evaluating rules over a
//! million customers in milliseconds and streaming them at memory speed.
//!
//! The database stays the source of truth (the followers write there). The
//! mirror is an immutable [`Rows`] behind an `Arc`: a reader takes the
//! current one and keeps a consistent snapshot for as long as it needs,
//! however the view changes meanwhile. A background refresher catches the
//! mirror up with the database by applying only the rows changed since its
//! revision (every view write takes a new, gap-free revision); a reader
//! waits for the refresher to reach the database's revision at the time of
//! the request (at most a couple of seconds), so what it sees is normally
//! never older than what the database held when it arrived. Rows live in
//! sorted chunks shared between versions, so a new version copies only the
//! chunks it changes.

use std::{sync::Arc, time::Duration};

use patron_domain::ApiError;
use patron_store::campaign::{CampaignStore, Snapshot, ViewRow};
use tokio_util::sync::CancellationToken;

/// Rows per chunk after a split; a chunk splits at twice this.
const CHUNK: usize = 1_024;
/// Rows read from the database per page while catching up.
const CATCH_UP_PAGE: u64 = 10_000;

/// One immutable version of the view, sorted by customer id.
#[derive(Clone, Default)]
pub(crate) struct Rows {
    /// The view revision this version reflects.
    pub(crate) revision: i64,
    chunks: Vec<Arc<Vec<Arc<ViewRow>>>>,
    len: usize,
}

impl Rows {
    /// Rows in customer-id order, chunk by chunk.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &[Arc<ViewRow>]> {
        self.chunks.iter().map(|c| c.as_slice())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn chunk_for(&self, id: &str) -> usize {
        // The first chunk whose last id is >= id, else the last chunk.
        self.chunks
            .partition_point(|c| c.last().is_some_and(|r| r.record.customer_id.as_str() < id))
            .min(self.chunks.len().saturating_sub(1))
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<ViewRow>> {
        let chunk = self.chunks.get(self.chunk_for(id))?;
        chunk
            .binary_search_by(|r| r.record.customer_id.as_str().cmp(id))
            .ok()
            .map(|i| &chunk[i])
    }

    /// Inserts or replaces a row, copying only the chunk it lands in.
    fn upsert(&mut self, row: ViewRow) {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let at = self.chunk_for(&row.record.customer_id);
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        match chunk.binary_search_by(|r| r.record.customer_id.cmp(&row.record.customer_id)) {
            Ok(i) => chunk[i] = Arc::new(row),
            Err(i) => {
                chunk.insert(i, Arc::new(row));
                self.len += 1;
                if chunk.len() >= 2 * CHUNK {
                    let tail = chunk.split_off(CHUNK);
                    self.chunks.insert(at + 1, Arc::new(tail));
                }
            }
        }
    }
}

struct Inner {
    store: CampaignStore,
    /// The newest complete version (`None` until the first load finishes).
    current: tokio::sync::watch::Sender<Option<Arc<Rows>>>,
    /// Wakes the refresher when a reader finds the mirror behind.
    behind: tokio::sync::Notify,
}

/// How long a reader waits for a catch-up before it settles for the newest
/// complete version (a large recompute can change every row at once).
const MAX_WAIT: Duration = Duration::from_secs(2);

/// The mirror, shared by every request of the service.
#[derive(Clone)]
pub(crate) struct MemoryView(Option<Arc<Inner>>);

impl MemoryView {
    /// `enabled = false` (config `campaign.in_memory_view`) leaves every
    /// read to the database.
    pub(crate) fn new(store: CampaignStore, enabled: bool) -> Self {
        Self(enabled.then(|| {
            Arc::new(Inner {
                store,
                current: tokio::sync::watch::channel(None).0,
                behind: tokio::sync::Notify::new(),
            })
        }))
    }

    /// Starts the refresher: it loads the mirror, then catches it up
    /// whenever a reader (or the periodic check) finds it behind the
    /// database. Catch-ups run here, not in requests, so a cancelled request
    /// never throws work away.
    pub(crate) fn start(&self, interval: Duration, shutdown: CancellationToken) {
        let Some(inner) = self.0.clone() else { return };
        tokio::spawn(async move {
            let mut rows = Rows {
                revision: -1,
                ..Rows::default()
            };
            let mut loaded = false;
            loop {
                let started = std::time::Instant::now();
                let before = rows.revision;
                match catch_up(&inner.store, rows.clone()).await {
                    Ok(next) => {
                        if !loaded || next.revision > before {
                            if !loaded {
                                tracing::info!(
                                    customers = next.len(),
                                    revision = next.revision,
                                    seconds = started.elapsed().as_secs_f64(),
                                    "campaign view loaded into memory"
                                );
                            }
                            loaded = true;
                            rows = next;
                            inner.current.send_replace(Some(Arc::new(rows.clone())));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "campaign view catch-up failed; retrying"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = inner.behind.notified() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// The mirror, current as of the database's view revision now (or, if
    /// catching up takes longer than [`MAX_WAIT`], the newest complete
    /// version); `None` when disabled. Waits for the first load.
    pub(crate) async fn fresh(&self) -> Result<Option<Arc<Rows>>, ApiError> {
        let Some(inner) = &self.0 else {
            return Ok(None);
        };
        let head = inner.store.view_revision().await?;
        let mut current = inner.current.subscribe();
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let newest = current.borrow_and_update().clone();
            if let Some(rows) = newest {
                if rows.revision >= head || tokio::time::Instant::now() >= deadline {
                    return Ok(Some(rows));
                }
                inner.behind.notify_one();
                tokio::select! {
                    changed = current.changed() => if changed.is_err() { return Ok(Some(rows)) },
                    () = tokio::time::sleep_until(deadline) => {}
                }
            } else if current.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

/// Applies every row changed after `rows.revision`, read from one database
/// snapshot, and moves the revision to that snapshot's. A mirror at the
/// snapshot's revision costs one read of the view head.
async fn catch_up(store: &CampaignStore, mut rows: Rows) -> Result<Rows, ApiError> {
    let snapshot = store.snapshot().await?;
    let to = snapshot.revision().await?;
    let result = if rows.revision < 0 {
        load(&snapshot, &mut rows).await
    } else if to > rows.revision {
        apply_changes(&snapshot, &mut rows).await
    } else {
        Ok(())
    };
    snapshot.close().await;
    result?;
    rows.revision = to;
    Ok(rows)
}

/// The load from scratch: every row, in primary-key order.
async fn load(snapshot: &Snapshot, rows: &mut Rows) -> Result<(), ApiError> {
    let mut after = String::new();
    loop {
        let page = snapshot.all_rows_page(&after, CATCH_UP_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.record.customer_id.clone();
        let full = page.len() as u64 == CATCH_UP_PAGE;
        for row in page {
            rows.upsert(row);
        }
        if !full {
            return Ok(());
        }
    }
    Ok(())
}

/// The rows changed since `rows.revision`, through the revision index.
async fn apply_changes(snapshot: &Snapshot, rows: &mut Rows) -> Result<(), ApiError> {
    let since = rows.revision;
    let mut after = None;
    loop {
        let (page, next) = snapshot
            .changed_page(since, after.as_ref(), CATCH_UP_PAGE)
            .await?;
        for row in page {
            rows.upsert(row);
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use patron_domain::segment::Record;

    use super::*;

    fn row(id: &str, region: &str) -> ViewRow {
        ViewRow {
            record: Record {
                customer_id: id.into(),
                region: region.into(),
                ..Record::default()
            },
            ..ViewRow::default()
        }
    }

    #[test]
    fn chunks_stay_sorted_and_versions_share_untouched_chunks() {
        let mut rows = Rows::default();
        // Out of order, with replacements, enough to split many times.
        for i in (0..10_000).rev().chain((0..10_000).step_by(7)) {
            rows.upsert(row(
                &format!("c{i:05}"),
                if i % 2 == 0 { "East" } else { "West" },
            ));
        }
        assert_eq!(rows.len(), 10_000);
        let ids: Vec<&str> = rows
            .chunks()
            .flatten()
            .map(|r| r.record.customer_id.as_str())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(rows.chunks().all(|c| c.len() < 2 * CHUNK));
        assert_eq!(rows.get("c04242").unwrap().record.region, "East");
        assert!(rows.get("c99999").is_none() && rows.get("a").is_none());

        let before = rows.clone();
        rows.upsert(row("c04242", "North"));
        assert_eq!(rows.get("c04242").unwrap().record.region, "North");
        assert_eq!(
            before.get("c04242").unwrap().record.region,
            "East",
            "old versions do not change"
        );
        let shared = before
            .chunks
            .iter()
            .zip(&rows.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(
            shared,
            rows.chunks.len() - 1,
            "only the touched chunk is copied"
        );
    }
}
