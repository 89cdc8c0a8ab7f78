//! Wire <-> domain conversions of the feedback service.

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError, Violations,
    feedback::{Complaint, ComplaintStatus, Severity, SurveyKind, SurveyResponse},
};
use patron_proto::feedback as pb;
use patron_runtime::convert::{optional_timestamp, required_timestamp, to_timestamp};

pub(crate) fn response(
    r: &pb::SurveyResponse,
    now: DateTime<Utc>,
) -> Result<SurveyResponse, ApiError> {
    let mut v = Violations::new();
    let kind = match pb::SurveyKind::try_from(r.kind) {
        Ok(pb::SurveyKind::Nps) => Some(SurveyKind::Nps),
        Ok(pb::SurveyKind::Csat) => Some(SurveyKind::Csat),
        _ => {
            v.add("kind", "must be SURVEY_KIND_NPS or SURVEY_KIND_CSAT");
            None
        }
    };
    let occurred_at = v.take(required_timestamp(r.occurred_at.as_ref(), "occurred_at"));
    v.finish()?;
    let (Some(kind), Some(occurred_at)) = (kind, occurred_at) else {
        return Err(ApiError::internal("survey conversion lost a field"));
    };
    SurveyResponse {
        id: r.id.clone(),
        customer_id: r.customer_id.clone(),
        kind,
        score: r.score,
        comment: r.comment.clone(),
        product_id: r.product_id.clone(),
        region: r.region.clone(),
        channel: r.channel.clone(),
        occurred_at,
    }
    .validate(now)
}

pub(crate) fn status(value: i32) -> Result<Option<ComplaintStatus>, ApiError> {
    Ok(match pb::ComplaintStatus::try_from(value) {
        Ok(pb::ComplaintStatus::Unspecified) => None,
        Ok(pb::ComplaintStatus::Open) => Some(ComplaintStatus::Open),
        Ok(pb::ComplaintStatus::InProgress) => Some(ComplaintStatus::InProgress),
        Ok(pb::ComplaintStatus::Resolved) => Some(ComplaintStatus::Resolved),
        Ok(pb::ComplaintStatus::Closed) => Some(ComplaintStatus::Closed),
        Err(_) => {
            return Err(ApiError::invalid_field(
                "status",
                format!("unknown value {value}"),
            ));
        }
    })
}

pub(crate) fn status_to_proto(s: ComplaintStatus) -> pb::ComplaintStatus {
    match s {
        ComplaintStatus::Open => pb::ComplaintStatus::Open,
        ComplaintStatus::InProgress => pb::ComplaintStatus::InProgress,
        ComplaintStatus::Resolved => pb::ComplaintStatus::Resolved,
        ComplaintStatus::Closed => pb::ComplaintStatus::Closed,
    }
}

pub(crate) fn severity(value: i32) -> Result<Severity, ApiError> {
    Ok(match pb::ComplaintSeverity::try_from(value) {
        Ok(pb::ComplaintSeverity::Unspecified) => Severity::Unspecified,
        Ok(pb::ComplaintSeverity::Low) => Severity::Low,
        Ok(pb::ComplaintSeverity::Medium) => Severity::Medium,
        Ok(pb::ComplaintSeverity::High) => Severity::High,
        Ok(pb::ComplaintSeverity::Critical) => Severity::Critical,
        Err(_) => {
            return Err(ApiError::invalid_field(
                "severity",
                format!("unknown value {value}"),
            ));
        }
    })
}

fn severity_to_proto(s: Severity) -> pb::ComplaintSeverity {
    match s {
        Severity::Unspecified => pb::ComplaintSeverity::Unspecified,
        Severity::Low => pb::ComplaintSeverity::Low,
        Severity::Medium => pb::ComplaintSeverity::Medium,
        Severity::High => pb::ComplaintSeverity::High,
        Severity::Critical => pb::ComplaintSeverity::Critical,
    }
}

/// A new complaint from the wire. History may be imported: `filed_time`,
/// `status`, `first_response_time` and `resolved_time` may be given.
pub(crate) fn new_complaint(
    c: &pb::Complaint,
    id: String,
    now: DateTime<Utc>,
) -> Result<Complaint, ApiError> {
    let mut v = Violations::new();
    let filed_time = v
        .take(optional_timestamp(c.filed_time.as_ref(), "filed_time"))
        .flatten()
        .unwrap_or(now);
    let first_response = v
        .take(optional_timestamp(
            c.first_response_time.as_ref(),
            "first_response_time",
        ))
        .flatten();
    let resolved = v
        .take(optional_timestamp(
            c.resolved_time.as_ref(),
            "resolved_time",
        ))
        .flatten();
    let status = v
        .take(status(c.status))
        .flatten()
        .unwrap_or(ComplaintStatus::Open);
    let severity = v.take(severity(c.severity)).unwrap_or_default();
    v.finish()?;
    let resolved_time = match status {
        ComplaintStatus::Resolved | ComplaintStatus::Closed => Some(resolved.unwrap_or(now)),
        _ if resolved.is_some() => {
            return Err(ApiError::invalid_field(
                "resolved_time",
                "is only set on RESOLVED or CLOSED complaints",
            ));
        }
        _ => None,
    };
    let first_response_time = match status {
        ComplaintStatus::Open => first_response,
        _ => Some(first_response.or(resolved_time).unwrap_or(now)),
    };
    Complaint {
        id,
        customer_id: c.customer_id.clone(),
        kind: c.r#type.trim().to_owned(),
        product_id: c.product_id.clone(),
        region: c.region.clone(),
        channel: c.channel.clone(),
        assignee: c.assignee.clone(),
        severity,
        status,
        description: c.description.clone(),
        resolution: c.resolution.clone(),
        filed_time,
        first_response_time,
        resolved_time,
        update_time: now,
        version: 1,
    }
    .validate(now)
}

pub(crate) fn complaint_to_proto(c: &Complaint) -> pb::Complaint {
    pb::Complaint {
        id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        r#type: c.kind.clone(),
        product_id: c.product_id.clone(),
        region: c.region.clone(),
        channel: c.channel.clone(),
        assignee: c.assignee.clone(),
        severity: severity_to_proto(c.severity) as i32,
        status: status_to_proto(c.status) as i32,
        description: c.description.clone(),
        resolution: c.resolution.clone(),
        filed_time: Some(to_timestamp(c.filed_time)),
        first_response_time: c.first_response_time.map(to_timestamp),
        resolved_time: c.resolved_time.map(to_timestamp),
        etag: c.etag(),
        update_time: Some(to_timestamp(c.update_time)),
    }
}
