//! The feedback service's logic.

use std::collections::HashSet;

use patron_domain::{
    ApiError, Violations, activity::check_id, customer::parse_etag, feedback::Complaint, filter,
};
use patron_proto::{
    feedback as pb,
    profile::{
        BatchGetCustomersRequest, customer_profile_service_client::CustomerProfileServiceClient,
    },
};
use patron_runtime::peers::PeerChannel as Channel;
use patron_runtime::{
    ServiceContext, ServiceKind,
    convert::{now, to_timestamp},
    error::{ApiResult, from_peer},
};
use patron_store::{
    feedback::{FeedbackStore, complaint_filter_fields},
    paging,
};

use crate::{
    convert::{complaint_to_proto, new_complaint, response, severity, status},
    reports,
};

const MAX_RESPONSES_PER_CALL: usize = 10_000;

#[derive(Clone)]
pub struct FeedbackApi {
    pub(crate) store: FeedbackStore,
    profile: Option<Channel>,
}

impl FeedbackApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: FeedbackStore::new(&ctx.storage),
            profile: ctx.peers.channel(ServiceKind::Profile),
        }
    }

    /// Violations for references to customers profile does not know (or erased).
    async fn check_customers(&self, refs: &[(String, String)]) -> ApiResult<Violations> {
        let mut v = Violations::new();
        let unique: Vec<String> = refs
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let known = self.known_customers(&unique).await?;
        for (field, id) in refs {
            if !known.contains(id) {
                v.add(field.clone(), format!("unknown customer {id:?}"));
            }
        }
        Ok(v)
    }

    /// Those of `unique` (distinct ids) that profile knows and has not erased.
    async fn known_customers(&self, unique: &[String]) -> ApiResult<HashSet<String>> {
        let channel = self
            .profile
            .clone()
            .ok_or_else(|| ApiError::internal("no profile peer configured"))?;
        let mut client = CustomerProfileServiceClient::new(channel);
        let mut known = HashSet::new();
        for chunk in unique.chunks(1_000) {
            let found = client
                .batch_get_customers(BatchGetCustomersRequest {
                    ids: chunk.to_vec(),
                })
                .await
                .map_err(|s| from_peer("profile", s))?
                .into_inner();
            known.extend(
                found
                    .customers
                    .into_iter()
                    .filter(|c| c.erase_time.is_none())
                    .map(|c| c.id),
            );
        }
        Ok(known)
    }

    pub(crate) async fn submit(
        &self,
        req: pb::SubmitSurveyResponsesRequest,
    ) -> ApiResult<pb::SubmitSurveyResponsesResponse> {
        if req.responses.len() > MAX_RESPONSES_PER_CALL {
            return Err(ApiError::invalid_field(
                "responses",
                format!("at most {MAX_RESPONSES_PER_CALL} per call"),
            ));
        }
        let now = now();
        let mut v = Violations::new();
        let batch: Vec<_> = req
            .responses
            .iter()
            .enumerate()
            .filter_map(|(i, r)| v.check(&format!("responses[{i}]"), response(r, now)))
            .collect();
        v.finish()?;
        let refs: Vec<(String, String)> = req
            .responses
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("responses[{i}].customer_id"), r.customer_id.clone()))
            .collect();
        self.check_customers(&refs).await?.finish()?;
        let outcome = self.store.submit_responses(&batch, now).await?;
        Ok(pb::SubmitSurveyResponsesResponse {
            accepted: outcome.accepted as i32,
            duplicates: outcome.duplicates as i32,
        })
    }

    pub(crate) async fn file(&self, req: pb::FileComplaintRequest) -> ApiResult<pb::Complaint> {
        let c = req
            .complaint
            .ok_or_else(|| ApiError::invalid_field("complaint", "is required"))?;
        let now = now();
        let complaint = new_complaint(&c, uuid::Uuid::now_v7().to_string(), now)
            .map_err(|e| e.within("complaint"))?;
        if req.request_id.len() > 128 {
            return Err(ApiError::invalid_field(
                "request_id",
                "must be at most 128 bytes",
            ));
        }
        self.check_customers(&[(
            "complaint.customer_id".into(),
            complaint.customer_id.clone(),
        )])
        .await?
        .finish()?;
        let key = (!req.request_id.trim().is_empty())
            .then(|| format!("file_complaint:{}", req.request_id.trim()));
        let stored = self
            .store
            .file_complaint(&complaint, key.as_deref(), now)
            .await?;
        Ok(complaint_to_proto(&stored))
    }

    pub(crate) async fn get(&self, req: pb::GetComplaintRequest) -> ApiResult<pb::Complaint> {
        let mut v = Violations::new();
        check_id(&mut v, "id", &req.id);
        v.finish()?;
        Ok(complaint_to_proto(
            &self.store.get_complaint(&req.id).await?,
        ))
    }

    pub(crate) async fn update(&self, req: pb::UpdateComplaintRequest) -> ApiResult<pb::Complaint> {
        let incoming = req
            .complaint
            .ok_or_else(|| ApiError::invalid_field("complaint", "is required"))?;
        let mut v = Violations::new();
        check_id(&mut v, "complaint.id", &incoming.id);
        v.finish()?;
        let current = self.store.get_complaint(&incoming.id).await?;
        if !incoming.etag.trim().is_empty() {
            let expected = parse_etag(&incoming.etag).ok_or_else(|| {
                ApiError::invalid_field("complaint.etag", "is not an etag of this API")
            })?;
            if expected != current.version {
                return Err(ApiError::aborted(
                    "ETAG_MISMATCH",
                    format!("the complaint changed since etag {expected}; read it again"),
                ));
            }
        }
        // Without a mask, the fields sent (AIP-134's implied mask), so a
        // client that assigns a complaint leaves the rest as it is.
        let paths = match req.update_mask.map(|m| m.paths) {
            Some(paths) if !paths.is_empty() => paths,
            _ => implied_mask(&incoming),
        };
        let now = now();
        let mut next = Complaint {
            update_time: now,
            version: current.version + 1,
            ..current.clone()
        };
        for path in &paths {
            match path.as_str() {
                "type" => next.kind = incoming.r#type.trim().to_owned(),
                "product_id" => next.product_id = incoming.product_id.clone(),
                "region" => next.region = incoming.region.clone(),
                "channel" => next.channel = incoming.channel.clone(),
                "assignee" => next.assignee = incoming.assignee.clone(),
                "description" => next.description = incoming.description.clone(),
                "resolution" => next.resolution = incoming.resolution.clone(),
                "severity" => {
                    next.severity =
                        severity(incoming.severity).map_err(|e| e.within("complaint"))?
                }
                "status" => {
                    let to = status(incoming.status)
                        .map_err(|e| e.within("complaint"))?
                        .ok_or_else(|| {
                            ApiError::invalid_field(
                                "complaint.status",
                                "must be set when in the mask",
                            )
                        })?;
                    if !current.status.can_become(to) {
                        return Err(ApiError::failed_precondition(
                            "ILLEGAL_STATUS_TRANSITION",
                            format!(
                                "a complaint cannot go from {} to {}",
                                current.status.as_str().to_uppercase(),
                                to.as_str().to_uppercase()
                            ),
                        ));
                    }
                    next.status = to;
                }
                p @ ("id"
                | "customer_id"
                | "filed_time"
                | "first_response_time"
                | "resolved_time"
                | "etag"
                | "update_time") => {
                    return Err(ApiError::invalid_field(
                        "update_mask",
                        format!("{p:?} cannot be updated"),
                    ));
                }
                p => {
                    return Err(ApiError::invalid_field(
                        "update_mask",
                        format!("unknown field {p:?}"),
                    ));
                }
            }
        }
        // Lifecycle times follow the status.
        if current.status == patron_domain::feedback::ComplaintStatus::Open
            && next.status != current.status
        {
            next.first_response_time.get_or_insert(now);
        }
        match (current.status, next.status) {
            (from, patron_domain::feedback::ComplaintStatus::Resolved) if from != next.status => {
                next.resolved_time = Some(now)
            }
            (
                patron_domain::feedback::ComplaintStatus::Resolved,
                patron_domain::feedback::ComplaintStatus::InProgress,
            ) => next.resolved_time = None,
            _ => {}
        }
        let next = next.validate(now).map_err(|e| e.within("complaint"))?;
        let unchanged = Complaint {
            update_time: current.update_time,
            version: current.version,
            ..next.clone()
        } == current;
        if unchanged {
            // Nothing to write: the etag stays, so other writers holding it
            // are not turned away for nothing.
            return Ok(complaint_to_proto(&current));
        }
        self.store.update_complaint(&next, current.version).await?;
        Ok(complaint_to_proto(&next))
    }

    pub(crate) async fn list(
        &self,
        req: pb::ListComplaintsRequest,
    ) -> ApiResult<pb::ListComplaintsResponse> {
        let page_size = paging::page_size(req.page_size, 50, 1_000)?;
        if !req.order_by.trim().is_empty() && req.order_by.trim() != "filed_time desc" {
            return Err(ApiError::invalid_field(
                "order_by",
                "only \"filed_time desc\" (the default) is supported",
            ));
        }
        let filter = filter::parse(&req.filter, complaint_filter_fields())?;
        let fingerprint = paging::fingerprint(&["complaints", req.filter.trim()]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let (rows, next, total) = self
            .store
            .list_complaints(filter.as_ref(), page_size, after.as_ref())
            .await?;
        Ok(pb::ListComplaintsResponse {
            complaints: rows.iter().map(complaint_to_proto).collect(),
            next_page_token: next
                .map(|c| paging::encode(c, fingerprint))
                .unwrap_or_default(),
            total_size: total as i64,
        })
    }

    pub(crate) async fn customer_summary(
        &self,
        req: pb::GetCustomerFeedbackSummaryRequest,
    ) -> ApiResult<pb::CustomerFeedbackSummary> {
        let mut v = Violations::new();
        check_id(&mut v, "customer_id", &req.customer_id);
        v.finish()?;
        let summary = summary(&self.store, req.customer_id).await?;
        // No feedback at all: a customer who never answered or complained,
        // or no customer. Only then ask profile which (one call, off the
        // common path), so an unknown id is NOT_FOUND, not an empty summary.
        let nothing = summary.latest_nps.is_none()
            && summary.csat_responses == 0
            && summary.total_complaints == 0;
        if nothing
            && !self
                .known_customers(std::slice::from_ref(&summary.customer_id))
                .await?
                .contains(&summary.customer_id)
        {
            return Err(ApiError::not_found("customer", &summary.customer_id));
        }
        Ok(summary)
    }

    /// Every summary changed after `after_revision`, page by page, then the
    /// stream ends.
    pub(crate) fn stream_summaries(
        &self,
        req: pb::StreamCustomerSummariesRequest,
    ) -> ApiResult<SummaryStream> {
        if req.after_revision < 0 {
            return Err(ApiError::invalid_field(
                "after_revision",
                "must not be negative",
            ));
        }
        const PAGE: u64 = 500;
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            // Everything after the whole of `after_revision`, then page by page.
            let mut after: (i64, Option<String>) = (req.after_revision, None);
            loop {
                let page = match store
                    .summaries_changed_after((after.0, after.1.as_deref()), PAGE)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(patron_runtime::to_status(e))).await;
                        return;
                    }
                };
                let Some(last) = page.last() else { return };
                after = (last.0, Some(last.1.clone()));
                let full = page.len() as u64 == PAGE;
                let mut msg = pb::StreamCustomerSummariesResponse::default();
                for (revision, id) in page {
                    match summary(&store, id).await {
                        Ok(s) => {
                            msg.summaries.push(s);
                            msg.revisions.push(revision);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(patron_runtime::to_status(e))).await;
                            return;
                        }
                    }
                }
                if tx.send(Ok(msg)).await.is_err() || !full {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    pub(crate) async fn complaint_report(
        &self,
        req: pb::GetComplaintReportRequest,
    ) -> ApiResult<pb::ComplaintReport> {
        reports::complaints(&self.store, req, now()).await
    }
}

/// One customer's feedback summary.
async fn summary(
    store: &FeedbackStore,
    customer_id: String,
) -> ApiResult<pb::CustomerFeedbackSummary> {
    let f = store.customer_feedback(&customer_id).await?;
    Ok(pb::CustomerFeedbackSummary {
        customer_id,
        latest_nps: f.latest_nps.map(|(s, _)| s),
        latest_nps_time: f.latest_nps.map(|(_, t)| to_timestamp(t)),
        csat_mean: f.csat_mean,
        csat_responses: f.csat_responses,
        open_complaints: f.open_complaints,
        oldest_open_complaint_time: f.oldest_open_complaint.map(to_timestamp),
        total_complaints: f.total_complaints,
    })
}

pub(crate) type SummaryStream = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = Result<pb::StreamCustomerSummariesResponse, tonic::Status>>
            + Send,
    >,
>;

/// The mutable fields `complaint` sets: the mask a request without one
/// implies (AIP-134).
fn implied_mask(complaint: &pb::Complaint) -> Vec<String> {
    [
        ("type", !complaint.r#type.is_empty()),
        ("product_id", !complaint.product_id.is_empty()),
        ("region", !complaint.region.is_empty()),
        ("channel", !complaint.channel.is_empty()),
        ("assignee", !complaint.assignee.is_empty()),
        ("description", !complaint.description.is_empty()),
        ("resolution", !complaint.resolution.is_empty()),
        ("severity", complaint.severity != 0),
        ("status", complaint.status != 0),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(path, _)| path.to_owned())
    .collect()
}
