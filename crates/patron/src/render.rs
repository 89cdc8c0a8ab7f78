//! Human- and machine-readable output of wire messages.

use chrono::{DateTime, Utc};
use patron_proto::{google::r#type::Date, profile as pb};
use serde_json::{Value, json};
use tonic_types::StatusExt;

pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| Value::String(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

pub(crate) fn date(d: Option<&Date>) -> Value {
    d.map(|d| Value::String(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)))
        .unwrap_or(Value::Null)
}

pub(crate) fn customer(c: &pb::Customer) -> Value {
    let consent = c.marketing_consent.unwrap_or_default();
    json!({
        "id": c.id,
        "external_id": c.external_id,
        "display_name": c.display_name,
        "email": c.email,
        "phone": c.phone,
        "birth_date": date(c.birth_date.as_ref()),
        "gender": pb::Gender::try_from(c.gender).map(|g| g.as_str_name()).unwrap_or("UNKNOWN"),
        "region": c.region,
        "city": c.city,
        "occupation": c.occupation,
        "income_band": pb::IncomeBand::try_from(c.income_band).map(|b| b.as_str_name()).unwrap_or("UNKNOWN"),
        "tags": c.tags,
        "attributes": c.attributes,
        "marketing_consent": {
            "email": consent.email, "sms": consent.sms, "phone": consent.phone,
            "push": consent.push, "post": consent.post,
        },
        "relationship_start_date": date(c.relationship_start_date.as_ref()),
        "create_time": timestamp(c.create_time.as_ref()),
        "update_time": timestamp(c.update_time.as_ref()),
        "erase_time": timestamp(c.erase_time.as_ref()),
        "etag": c.etag,
    })
}

/// A failed call: code, message, and each field violation on its own line.
pub(crate) fn status(status: &tonic::Status) -> String {
    let mut out = format!("error: {:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_error_details().bad_request() {
        for v in &bad.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    out
}
