//! The segment watcher: turns changes of the view into ENTERED / LEFT
//! membership changes for every segment.
//!
//! Each round it compares, per segment, the view revision the membership
//! reflects with the current one. Usually only the rows changed since are
//! re-evaluated (incremental); after the rule was edited, or when the day
//! changed (date helpers such as `days_to_birthday` move with the calendar),
//! the whole view is (full). Changes, the member set and a history point
//! are written in one transaction, so a watcher that dies half-way leaves
//! nothing half-written and the next round redoes the work.

use std::{collections::HashSet, sync::Arc, time::Duration};

use patron_domain::ApiError;
use patron_runtime::{ServiceContext, convert::now};
use patron_store::campaign::{CampaignStore, SegmentRow, ViewRow};

use crate::{
    memory::MemoryView,
    segments::{Evaluation, SCAN_PAGE, Source, parse_rule, today_day},
};

pub(crate) fn start(ctx: &ServiceContext, memory: MemoryView) {
    let store = CampaignStore::new(&ctx.storage);
    let interval = Duration::from_millis(ctx.settings.campaign.watch_interval_ms);
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = round(&store, &memory) => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "segment watcher round failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
}

/// One pass over every segment.
pub(crate) async fn round(store: &CampaignStore, memory: &MemoryView) -> Result<(), ApiError> {
    let revision = store.view_revision().await?;
    let today = today_day();
    let mut after = String::new();
    loop {
        let segments = store.segments(&after, 100).await?;
        let Some(last) = segments.last() else {
            return Ok(());
        };
        after = last.id.clone();
        for segment in &segments {
            let stale =
                segment.evaluated_version != segment.version || segment.evaluated_day != today;
            if (stale || segment.evaluated_revision < revision)
                && let Err(e) = evaluate(store, memory, segment, stale).await
            {
                tracing::warn!(segment = %segment.id, error = %e, "segment evaluation failed");
            }
        }
    }
}

async fn evaluate(
    store: &CampaignStore,
    memory: &MemoryView,
    segment: &SegmentRow,
    full: bool,
) -> Result<(), ApiError> {
    let rule = parse_rule(&segment.expression, "expression")?;
    let eval = Evaluation::new(rule, "", "")?;
    let (revision, entered, left) = if full {
        let source = Source::open(store, memory).await?;
        let revision = source.revision().await?;
        let mut selected = HashSet::new();
        eval.scan(&source, |rows: Vec<Arc<ViewRow>>| {
            selected.extend(rows.iter().map(|r| r.record.customer_id.clone()));
            async { true }
        })
        .await?;
        source.close().await;
        let current = store.all_members(&segment.id).await?;
        let mut entered: Vec<String> = selected.difference(&current).cloned().collect();
        let mut left: Vec<String> = current.difference(&selected).cloned().collect();
        entered.sort();
        left.sort();
        (revision, entered, left)
    } else {
        // Only the rows changed since the last evaluation, from the database.
        let snapshot = store.snapshot().await?;
        let revision = snapshot.revision().await?;
        let (mut entered, mut left) = (Vec::new(), Vec::new());
        let mut after = None;
        loop {
            let (page, next) = snapshot
                .changed_page(segment.evaluated_revision, after.as_ref(), SCAN_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<String> = page.iter().map(|r| r.record.customer_id.clone()).collect();
            let members = store.members_among(&segment.id, &ids).await?;
            for row in &page {
                let id = &row.record.customer_id;
                match (eval.matches(row), members.contains(id)) {
                    (true, false) => entered.push(id.clone()),
                    (false, true) => left.push(id.clone()),
                    _ => {}
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        snapshot.close().await;
        // Pages come in revision order; changes are recorded by id, as in
        // a full evaluation.
        entered.sort();
        left.sort();
        (revision, entered, left)
    };
    store
        .record_evaluation(segment, revision, eval.today, &entered, &left, now())
        .await?;
    Ok(())
}
