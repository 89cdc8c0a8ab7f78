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

fn money(m: Option<&patron_proto::common::Money>) -> Value {
    m.map(|m| {
        let nanos = i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos);
        let sign = if nanos < 0 { "-" } else { "" };
        let abs = nanos.unsigned_abs();
        json!({"amount": format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000).trim_end_matches('0').trim_end_matches('.').to_owned(), "currency_code": m.currency_code})
    })
    .unwrap_or(Value::Null)
}

/// The right-of-access export as one JSON document.
pub(crate) fn export(e: &pb::ExportCustomerDataResponse) -> Value {
    json!({
        "customer": e.customer.as_ref().map(customer),
        "transactions": e.transactions.iter().map(|t| json!({
            "id": t.id, "occurred_at": timestamp(t.occurred_at.as_ref()), "amount": money(t.amount.as_ref()),
            "cost": money(t.cost.as_ref()), "channel": t.channel, "product_id": t.product_id,
            "category": t.category, "quantity": t.quantity, "region": t.region,
        })).collect::<Vec<_>>(),
        "events": e.events.iter().map(|ev| json!({
            "id": ev.id, "kind": pb::EventKind::try_from(ev.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
            "occurred_at": timestamp(ev.occurred_at.as_ref()), "properties": ev.properties,
        })).collect::<Vec<_>>(),
        "interactions": e.interactions.iter().map(|i| json!({
            "id": i.id, "kind": pb::InteractionKind::try_from(i.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
            "occurred_at": timestamp(i.occurred_at.as_ref()), "rep": i.rep, "outcome": i.outcome, "notes": i.notes,
        })).collect::<Vec<_>>(),
        "export_time": timestamp(e.export_time.as_ref()),
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

/// A fitted model, readably.
pub(crate) fn model(m: &patron_proto::scoring::ModelFit) -> Value {
    let bg = m.bg_nbd.unwrap_or_default();
    let gg = m.gamma_gamma.unwrap_or_default();
    json!({
        "model_version": m.model_version,
        "as_of": timestamp(m.as_of.as_ref()),
        "customers": m.customers,
        "repeat_customers": m.repeat_customers,
        "bg_nbd": {"r": bg.r, "alpha_days": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": m.log_likelihood},
        "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v, "log_likelihood": m.gamma_gamma_log_likelihood},
        "parameters_at_limit": m.parameters_at_limit,
        // A recompute's own provisional fit, replaced at the next recompute
        // until FitModel records one.
        "fitted_by_recompute": m.fitted_by_recompute,
        "holdout": m.holdout.as_ref().map(|h| json!({
            "holdout_end": timestamp(h.holdout_end.as_ref()),
            "predicted_purchases": h.predicted_purchases,
            "actual_purchases": h.actual_purchases,
            "by_calibration_frequency": h.buckets.iter().map(|b| json!({
                "frequency": if b.frequency == 7 { "7+".to_string() } else { b.frequency.to_string() },
                "customers": b.customers, "predicted_mean": b.predicted_mean, "actual_mean": b.actual_mean,
            })).collect::<Vec<_>>(),
        })),
    })
}

/// A customer's scores as one JSON document (enum values by name).
pub(crate) fn score(s: &patron_proto::scoring::CustomerScore) -> Value {
    use patron_proto::scoring as sp;
    let rfm = s.rfm.clone().unwrap_or_default();
    let clv = s.clv.clone().unwrap_or_default();
    let churn = s.churn.clone().unwrap_or_default();
    let profit = s.profitability.clone().unwrap_or_default();
    json!({
        "customer_id": s.customer_id,
        "rfm": {
            "recency_days": rfm.recency_days,
            "frequency": rfm.frequency,
            "monetary": money(rfm.monetary.as_ref()),
            "r_score": rfm.r_score, "f_score": rfm.f_score, "m_score": rfm.m_score,
            "segment": rfm.segment,
            "weighted_score": rfm.weighted_score,
            "ranks_stale": rfm.ranks_stale,
        },
        "clv": {
            "historical_value": money(clv.historical_value.as_ref()),
            "simple_clv": money(clv.simple_clv.as_ref()),
            "expected_purchases_365d": clv.expected_purchases_365d,
            "p_alive": clv.p_alive,
            "predicted_clv_365d": money(clv.predicted_clv_365d.as_ref()),
            "expected_occasion_value": money(clv.expected_occasion_value.as_ref()),
        },
        "churn": {
            "probability": churn.probability,
            "risk": sp::ChurnRisk::try_from(churn.risk).map_or("UNKNOWN", |v| v.as_str_name()),
            "reasons": churn.reasons,
        },
        "value_tier": sp::ValueTier::try_from(s.value_tier).map_or("UNKNOWN", |v| v.as_str_name()),
        "value_quadrant": sp::ValueQuadrant::try_from(s.value_quadrant).map_or("UNKNOWN", |v| v.as_str_name()),
        "lifecycle_stage": sp::LifecycleStage::try_from(s.lifecycle_stage).map_or("UNKNOWN", |v| v.as_str_name()),
        "loyalty_index": s.loyalty_index,
        "profitability": {
            "revenue": money(profit.revenue.as_ref()),
            "cost": money(profit.cost.as_ref()),
            "margin": money(profit.margin.as_ref()),
        },
        "model_version": s.model_version,
        "as_of": timestamp(s.as_of.as_ref()),
        "computed_at": timestamp(s.computed_at.as_ref()),
    })
}
