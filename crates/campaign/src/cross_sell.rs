//! Cross-sell suggestions: category affinity (support, confidence, lift)
//! over every customer's purchased categories, applied to one customer or
//! to the members of a segment.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use patron_domain::{
    ApiError, Violations,
    activity::check_id,
    models::affinity::{Affinity, AffinityRule},
};
use patron_proto::campaign as pb;
use patron_runtime::error::ApiResult;
use patron_store::campaign::{CampaignStore, ViewRow};
use tokio::sync::Mutex;

use crate::{
    memory::MemoryView,
    segments::{Evaluation, Source, parse_rule},
};

/// Rules below this share of customers are noise.
const MIN_SUPPORT: f64 = 0.001;
/// How long a computed affinity serves before a changed view rebuilds it.
const REFRESH_AFTER: Duration = Duration::from_secs(30);

/// The affinity over the whole view, rebuilt when the view changed and the
/// last build is older than [`REFRESH_AFTER`].
#[derive(Clone, Default)]
pub(crate) struct AffinityCache(Arc<Mutex<Option<Built>>>);

/// (view revision, build time, affinity)
type Built = (i64, Instant, Arc<Affinity>);

impl AffinityCache {
    async fn get(&self, store: &CampaignStore) -> ApiResult<Arc<Affinity>> {
        let revision = store.view_revision().await?;
        let mut slot = self.0.lock().await;
        if let Some((built_at_revision, built, a)) = slot.as_ref()
            && (*built_at_revision == revision || built.elapsed() < REFRESH_AFTER)
        {
            return Ok(a.clone());
        }
        let baskets = store.category_baskets().await?;
        let a = Arc::new(Affinity::from_baskets(
            baskets.iter().map(|b| b.iter().map(String::as_str)),
        ));
        *slot = Some((revision, Instant::now(), a.clone()));
        Ok(a)
    }
}

fn to_proto(r: &AffinityRule) -> pb::CrossSellSuggestion {
    pb::CrossSellSuggestion {
        from_category: r.from.clone(),
        to_category: r.to.clone(),
        support: r.support,
        confidence: r.confidence,
        lift: r.lift,
    }
}

pub(crate) async fn suggest(
    store: &CampaignStore,
    memory: &MemoryView,
    cache: &AffinityCache,
    req: pb::SuggestCrossSellRequest,
) -> ApiResult<pb::SuggestCrossSellResponse> {
    let mut v = Violations::new();
    match (req.customer_id.is_empty(), req.segment_id.is_empty()) {
        (true, true) => v.add(
            "customer_id",
            "one of customer_id or segment_id is required",
        ),
        (false, false) => v.add("segment_id", "give customer_id or segment_id, not both"),
        (false, true) => check_id(&mut v, "customer_id", &req.customer_id),
        (true, false) => check_id(&mut v, "segment_id", &req.segment_id),
    }
    let k = match req.max_suggestions {
        0 => 5,
        n @ 1..=50 => n as usize,
        _ => {
            v.add("max_suggestions", "must be between 0 (default 5) and 50");
            0
        }
    };
    v.finish()?;
    let affinity = cache.get(store).await?;
    // Only positive associations are worth suggesting.
    let rules: Vec<AffinityRule> = affinity
        .rules(MIN_SUPPORT)
        .into_iter()
        .filter(|r| r.lift > 1.0)
        .collect();
    let chosen: Vec<&AffinityRule> = if req.customer_id.is_empty() {
        for_segment(store, memory, &req.segment_id, &rules).await?
    } else {
        let rows = store.rows(std::slice::from_ref(&req.customer_id)).await?;
        let row = rows
            .get(&req.customer_id)
            .filter(|r| r.selectable())
            .ok_or_else(|| ApiError::not_found("customer", &req.customer_id))?;
        let bought: HashSet<&str> = row.record.categories.iter().map(String::as_str).collect();
        rules
            .iter()
            .filter(|r| bought.contains(r.from.as_str()) && !bought.contains(r.to.as_str()))
            .collect()
    };
    // Rules come by lift, descending: keep the best rule into each category.
    let mut seen = HashSet::new();
    let suggestions = chosen
        .into_iter()
        .filter(|r| seen.insert(r.to.clone()))
        .take(k)
        .map(to_proto)
        .collect();
    Ok(pb::SuggestCrossSellResponse { suggestions })
}

/// The rules (by lift) that apply to at least one member of the segment:
/// a member who bought the rule's `from` and not its `to`.
async fn for_segment<'a>(
    store: &CampaignStore,
    memory: &MemoryView,
    segment_id: &str,
    rules: &'a [AffinityRule],
) -> ApiResult<Vec<&'a AffinityRule>> {
    let segment = store.segment(segment_id).await?;
    let eval = Evaluation::new(parse_rule(&segment.expression, "segment_id")?, "", "")?;
    let mut by_from: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        by_from.entry(r.from.as_str()).or_default().push(i);
    }
    let mut applies = vec![false; rules.len()];
    let source = Source::open(store, memory).await?;
    eval.scan(&source, |rows: Vec<Arc<ViewRow>>| {
        for row in &rows {
            let bought = &row.record.categories;
            for c in bought {
                for &i in by_from.get(c.as_str()).into_iter().flatten() {
                    if !bought.contains(&rules[i].to) {
                        applies[i] = true;
                    }
                }
            }
        }
        async { true }
    })
    .await?;
    source.close().await;
    Ok(rules
        .iter()
        .zip(applies)
        .filter_map(|(r, a)| a.then_some(r))
        .collect())
}
