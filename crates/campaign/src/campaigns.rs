//! Campaigns: creation, the DRAFT -> LAUNCHED -> COMPLETED lifecycle, the
//! frozen audience with its treatment and control arms, responses and the
//! uplift report.

use patron_domain::{
    ApiError, Money, Violations,
    activity::check_id,
    campaign::{Arm, CampaignState, assign_arm, uplift},
    money::Currency,
    segment::channel_index,
};
use patron_proto::{campaign as pb, common};
use patron_runtime::{
    convert::{money, now, optional_timestamp, to_money, to_timestamp},
    error::{ApiResult, to_status},
};
use patron_store::{
    campaign::{CampaignRow, CampaignStore, ResponseRow, ViewRow, consent_column},
    paging,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    memory::MemoryView,
    segments::{Evaluation, Source, TARGETS_PER_MESSAGE, parse_rule, target, today_day},
};

const MAX_RESPONSES_PER_CALL: usize = 10_000;

pub(crate) type AudienceStream = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = Result<pb::StreamCampaignAudienceResponse, tonic::Status>>
            + Send,
    >,
>;

fn state_proto(s: CampaignState) -> pb::CampaignState {
    match s {
        CampaignState::Draft => pb::CampaignState::Draft,
        CampaignState::Launched => pb::CampaignState::Launched,
        CampaignState::Completed => pb::CampaignState::Completed,
    }
}

fn to_proto(c: &CampaignRow) -> pb::Campaign {
    pb::Campaign {
        id: c.id.clone(),
        display_name: c.display_name.clone(),
        kind: c.kind,
        segment_id: c.segment_id.clone(),
        channel: c.channel.clone(),
        control_fraction: c.control_fraction,
        state: state_proto(c.state) as i32,
        treatment_size: c.treatment_size,
        control_size: c.control_size,
        create_time: Some(to_timestamp(c.create_time)),
        launch_time: c.launch_time.map(to_timestamp),
        complete_time: c.complete_time.map(to_timestamp),
        etag: format!("\"{}\"", c.version),
    }
}

fn check_campaign_id(id: &str, field: &str) -> ApiResult<()> {
    let mut v = Violations::new();
    check_id(&mut v, field, id);
    v.finish()
}

pub(crate) async fn create(
    store: &CampaignStore,
    req: pb::CreateCampaignRequest,
) -> ApiResult<pb::Campaign> {
    let Some(c) = req.campaign else {
        return Err(ApiError::invalid_field("campaign", "is required"));
    };
    let mut v = Violations::new();
    if c.display_name.trim().is_empty() {
        v.add("campaign.display_name", "is required");
    } else if c.display_name.len() > 200 {
        v.add("campaign.display_name", "must be at most 200 bytes");
    }
    match pb::CampaignKind::try_from(c.kind) {
        Ok(pb::CampaignKind::Unspecified) | Err(_) => v.add(
            "campaign.kind",
            "is required: RETENTION, WIN_BACK, CROSS_SELL, UP_SELL, CARE or ACQUISITION",
        ),
        Ok(_) => {}
    }
    check_id(&mut v, "campaign.segment_id", &c.segment_id);
    // "" leaves consent to the campaign tool, as StreamTargets does without
    // a channel (service contact in a CARE campaign, say).
    if !c.channel.is_empty() && consent_column(&c.channel).is_none() {
        v.add(
            "campaign.channel",
            format!(
                "{:?} is not a channel (email, sms, phone, push, post)",
                c.channel
            ),
        );
    }
    if !(0.0..1.0).contains(&c.control_fraction) {
        v.add(
            "campaign.control_fraction",
            "must be at least 0 and less than 1",
        );
    }
    if !req.request_id.is_empty() {
        check_id(&mut v, "request_id", &req.request_id);
    }
    v.finish()?;
    store.segment(&c.segment_id).await.map_err(|e| {
        if e.code == patron_domain::ErrorCode::NotFound {
            ApiError::invalid_field(
                "campaign.segment_id",
                format!("segment {:?} does not exist", c.segment_id),
            )
        } else {
            e
        }
    })?;
    let row = CampaignRow {
        id: uuid::Uuid::now_v7().to_string(),
        display_name: c.display_name,
        kind: c.kind,
        segment_id: c.segment_id,
        channel: c.channel,
        control_fraction: c.control_fraction,
        state: CampaignState::Draft,
        treatment_size: 0,
        control_size: 0,
        create_time: now(),
        launch_time: None,
        complete_time: None,
        version: 1,
    };
    let request_id = Some(req.request_id.as_str()).filter(|r| !r.is_empty());
    Ok(to_proto(&store.insert_campaign(&row, request_id).await?))
}

pub(crate) async fn get(store: &CampaignStore, id: &str) -> ApiResult<pb::Campaign> {
    check_campaign_id(id, "id")?;
    Ok(to_proto(&store.campaign(id).await?))
}

pub(crate) async fn list(
    store: &CampaignStore,
    req: pb::ListCampaignsRequest,
) -> ApiResult<pb::ListCampaignsResponse> {
    let size = paging::page_size(req.page_size, 50, 1_000)?;
    let fingerprint = paging::fingerprint(&["campaigns"]);
    let after = paging::decode(&req.page_token, fingerprint)?;
    let rows = store
        .campaigns(after.as_ref().map_or("", |c| c.id.as_str()), size + 1)
        .await?;
    let more = rows.len() as u64 > size;
    let campaigns: Vec<pb::Campaign> = rows.iter().take(size as usize).map(to_proto).collect();
    let next_page_token =
        paging::next_by_id(more, campaigns.last().map(|c| c.id.as_str()), fingerprint);
    Ok(pb::ListCampaignsResponse {
        campaigns,
        next_page_token,
    })
}

/// Freezes the audience: the segment's customers with consent for the
/// channel, read from one snapshot, each assigned to an arm by
/// `assign_arm(campaign id, customer id)`.
pub(crate) async fn launch(
    store: &CampaignStore,
    memory: &MemoryView,
    id: &str,
) -> ApiResult<pb::Campaign> {
    check_campaign_id(id, "id")?;
    let c = store.campaign(id).await?;
    c.state.transition(CampaignState::Launched)?;
    let segment = store.segment(&c.segment_id).await.map_err(|e| {
        if e.code == patron_domain::ErrorCode::NotFound {
            ApiError::failed_precondition(
                "SEGMENT_DELETED",
                format!("the campaign's segment {:?} no longer exists", c.segment_id),
            )
        } else {
            e
        }
    })?;
    let eval = Evaluation::new(
        parse_rule(&segment.expression, "segment")?,
        &c.channel,
        "channel",
    )?;
    let source = Source::open(store, memory).await?;
    let mut audience = Vec::new();
    eval.scan(&source, |rows: Vec<Arc<ViewRow>>| {
        audience.extend(rows.iter().map(|r| {
            let id = &r.record.customer_id;
            (id.clone(), assign_arm(&c.id, id, c.control_fraction))
        }));
        async { true }
    })
    .await?;
    source.close().await;
    Ok(to_proto(&store.launch(&c, &audience, now()).await?))
}

pub(crate) async fn complete(store: &CampaignStore, id: &str) -> ApiResult<pb::Campaign> {
    check_campaign_id(id, "id")?;
    let c = store.campaign(id).await?;
    c.state.transition(CampaignState::Completed)?;
    Ok(to_proto(&store.complete(&c, now()).await?))
}

fn launched(c: &CampaignRow) -> ApiResult<()> {
    if c.state == CampaignState::Draft {
        return Err(ApiError::failed_precondition(
            "CAMPAIGN_NOT_LAUNCHED",
            format!("campaign {:?} is a DRAFT; launch it first", c.id),
        ));
    }
    Ok(())
}

/// One arm of the frozen audience, from one snapshot, in batches. Customers
/// erased or without consent for the channel since launch are left out
/// (they stay in the measured arm).
pub(crate) async fn stream_audience(
    store: CampaignStore,
    memory: MemoryView,
    req: pb::StreamCampaignAudienceRequest,
    shutdown: CancellationToken,
) -> ApiResult<AudienceStream> {
    let mut v = Violations::new();
    check_id(&mut v, "campaign_id", &req.campaign_id);
    let arm = match pb::Arm::try_from(req.arm) {
        Ok(pb::Arm::Treatment) => Some(Arm::Treatment),
        Ok(pb::Arm::Control) => Some(Arm::Control),
        _ => {
            v.add("arm", "is required: ARM_TREATMENT or ARM_CONTROL");
            None
        }
    };
    v.finish()?;
    let arm = arm.expect("checked");
    let c = store.campaign(&req.campaign_id).await?;
    launched(&c)?;
    // The rule's fields label the targets; a deleted segment leaves none.
    let rule = match store.segment(&c.segment_id).await {
        Ok(s) => parse_rule(&s.expression, "segment")?,
        Err(_) => parse_rule("true", "segment")?,
    };
    let consent = consent_column(&c.channel);
    let consent_index = channel_index(&c.channel);
    let source = Source::open(&store, &memory).await?;
    let today = today_day();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let page_size = TARGETS_PER_MESSAGE as u64;
        let mut after = String::new();
        loop {
            // The frozen ids of the arm, joined with the current view.
            let (page, full) = match &source {
                Source::Memory(rows) => {
                    match store.audience_ids(&c.id, arm, &after, page_size).await {
                        Ok(ids) => {
                            let full = ids.len() as u64 == page_size;
                            after = ids.last().cloned().unwrap_or_default();
                            let page: Vec<Arc<ViewRow>> = ids
                                .iter()
                                .filter_map(|id| rows.get(id))
                                .filter(|r| {
                                    !r.erased && consent_index.is_none_or(|i| r.record.consent[i])
                                })
                                .cloned()
                                .collect();
                            (Ok(page), full)
                        }
                        Err(e) => (Err(e), false),
                    }
                }
                Source::Database(snapshot) => {
                    match snapshot
                        .audience_page(&c.id, arm, consent, &after, page_size)
                        .await
                    {
                        Ok(page) => {
                            let full = page.len() as u64 == page_size;
                            after = page
                                .last()
                                .map(|r| r.record.customer_id.clone())
                                .unwrap_or_default();
                            (Ok(page.into_iter().map(Arc::new).collect()), full)
                        }
                        Err(e) => (Err(e), false),
                    }
                }
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(to_status(e))).await;
                    break;
                }
            };
            if !page.is_empty() {
                let targets = page.iter().map(|r| target(&rule, r, today)).collect();
                let sent = tokio::select! {
                    r = tx.send(Ok(pb::StreamCampaignAudienceResponse { targets })) => r.is_ok(),
                    () = shutdown.cancelled() => false,
                };
                if !sent {
                    break;
                }
            }
            if !full {
                break;
            }
        }
        source.close().await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

pub(crate) async fn record_responses(
    store: &CampaignStore,
    req: pb::RecordResponsesRequest,
) -> ApiResult<pb::RecordResponsesResponse> {
    let mut v = Violations::new();
    check_id(&mut v, "campaign_id", &req.campaign_id);
    if req.responses.is_empty() {
        v.add("responses", "must hold at least one response");
    } else if req.responses.len() > MAX_RESPONSES_PER_CALL {
        v.add(
            "responses",
            format!("at most {MAX_RESPONSES_PER_CALL} per call"),
        );
    }
    v.finish()?;
    let c = store.campaign(&req.campaign_id).await?;
    launched(&c)?;
    let ids: Vec<String> = req
        .responses
        .iter()
        .map(|r| r.customer_id.clone())
        .collect();
    let arms = store.arms_of(&c.id, &ids).await?;
    let mut currency: Option<Currency> = store
        .response_currency(&c.id)
        .await?
        .and_then(|c| Currency::parse(&c).ok());
    let at = now();
    let mut rows = Vec::with_capacity(req.responses.len());
    let mut v = Violations::new();
    for (i, r) in req.responses.into_iter().enumerate() {
        let f = |name: &str| format!("responses[{i}].{name}");
        check_id(&mut v, &f("id"), &r.id);
        check_id(&mut v, &f("customer_id"), &r.customer_id);
        if !r.customer_id.is_empty() && !arms.contains_key(&r.customer_id) {
            v.add(f("customer_id"), "is not in the campaign's audience");
        }
        let kind = match pb::ResponseKind::try_from(r.kind) {
            Ok(pb::ResponseKind::Unspecified) | Err(_) => {
                v.add(
                    f("kind"),
                    "is required: DELIVERED, OPENED, CLICKED or CONVERTED",
                );
                0
            }
            Ok(k) => k as i32,
        };
        let revenue = match &r.revenue {
            None => None,
            Some(m) => v.take(money(m, &f("revenue"))),
        };
        if let Some(m) = revenue {
            if m.nanos < 0 {
                v.add(f("revenue"), "must not be negative");
            }
            match currency {
                Some(cur) if cur != m.currency => v.add(
                    f("revenue.currency_code"),
                    format!("the campaign's revenue is in {}", cur.as_str()),
                ),
                _ => currency = Some(m.currency),
            }
        }
        let occurred_at = v
            .take(optional_timestamp(
                r.occurred_at.as_ref(),
                &f("occurred_at"),
            ))
            .flatten()
            .unwrap_or(at);
        rows.push(ResponseRow {
            id: r.id,
            customer_id: r.customer_id,
            kind,
            revenue_nanos: revenue.map_or(0, |m| m.nanos),
            currency: revenue
                .map(|m| m.currency.as_str().to_owned())
                .unwrap_or_default(),
            occurred_at,
        });
    }
    v.finish()?;
    let (accepted, duplicates) = store.record_responses(&c.id, &rows).await?;
    Ok(pb::RecordResponsesResponse {
        accepted: accepted as i32,
        duplicates: duplicates as i32,
    })
}

pub(crate) async fn report(
    store: &CampaignStore,
    req: pb::GetCampaignReportRequest,
) -> ApiResult<pb::CampaignReport> {
    check_campaign_id(&req.campaign_id, "campaign_id")?;
    let c = store.campaign(&req.campaign_id).await?;
    launched(&c)?;
    let [t, k] = store.arm_figures(&c).await?;
    let currency = store
        .response_currency(&c.id)
        .await?
        .and_then(|c| Currency::parse(&c).ok());
    let amount = |nanos: i128| -> Option<common::Money> {
        let currency = currency?;
        let nanos = i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX });
        Some(to_money(Money { currency, nanos }))
    };
    let arm = |f: &patron_domain::campaign::ArmFigures| pb::ArmReport {
        audience: f.audience,
        converted: f.converted,
        conversion_rate: f.conversion_rate(),
        revenue: amount(f.revenue_nanos),
    };
    let u = uplift(&t, &k);
    Ok(pb::CampaignReport {
        treatment: Some(arm(&t)),
        control: Some(arm(&k)),
        uplift: u.absolute,
        uplift_ci_low: u.ci_low,
        uplift_ci_high: u.ci_high,
        relative_uplift: u.relative,
        incremental_revenue: amount(u.incremental_revenue_nanos),
    })
}
