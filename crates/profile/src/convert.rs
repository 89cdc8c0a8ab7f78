//! Wire <-> domain conversions of the profile service.

use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError, Violations,
    activity::{Event, EventKind, Interaction, InteractionKind, Transaction},
    customer::{Customer, CustomerFields, Gender, IncomeBand, MarketingConsent},
};
use patron_proto::{common, profile as pb};
use patron_runtime::convert::{
    date, money, required_money, required_timestamp, to_date, to_money, to_timestamp,
};

/// Validates a wire customer into domain fields, reporting every bad field.
/// Field paths are relative to the customer (`email`, `birth_date`, ...).
pub(crate) fn customer_fields(
    c: &pb::Customer,
    today: NaiveDate,
) -> Result<CustomerFields, ApiError> {
    let (fields, mut v) = parse_typed(c);
    let validated = v.take(fields.validate(today));
    v.finish()?;
    validated.ok_or_else(|| ApiError::internal("validation returned neither value nor error"))
}

/// Parses the typed fields (enums, dates) without the business rules, so a
/// partial update can merge first and validate the result.
pub(crate) fn raw_customer_fields(c: &pb::Customer) -> Result<CustomerFields, ApiError> {
    let (fields, v) = parse_typed(c);
    v.finish().map(|()| fields)
}

/// The fields with their typed values parsed; an invalid typed field is
/// recorded in the violations and left at its default, so the business
/// rules can still check the rest.
fn parse_typed(c: &pb::Customer) -> (CustomerFields, Violations) {
    let mut v = Violations::new();
    let birth_date = v.take(date(c.birth_date.as_ref(), "birth_date")).flatten();
    let relationship_start_date = v
        .take(date(
            c.relationship_start_date.as_ref(),
            "relationship_start_date",
        ))
        .flatten();
    let gender = v.take(gender(c.gender)).unwrap_or_default();
    let income_band = v.take(income_band(c.income_band)).unwrap_or_default();
    let consent = c
        .marketing_consent
        .as_ref()
        .map(consent)
        .unwrap_or_default();
    let fields = CustomerFields {
        external_id: c.external_id.clone(),
        display_name: c.display_name.clone(),
        email: c.email.clone(),
        phone: c.phone.clone(),
        birth_date,
        gender,
        region: c.region.clone(),
        city: c.city.clone(),
        occupation: c.occupation.clone(),
        income_band,
        tags: c.tags.clone(),
        attributes: c
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        marketing_consent: consent,
        relationship_start_date,
    };
    (fields, v)
}

pub(crate) fn gender(value: i32) -> Result<Gender, ApiError> {
    Ok(match pb::Gender::try_from(value) {
        Ok(pb::Gender::Unspecified) => Gender::Unspecified,
        Ok(pb::Gender::Female) => Gender::Female,
        Ok(pb::Gender::Male) => Gender::Male,
        Ok(pb::Gender::Other) => Gender::Other,
        Ok(pb::Gender::Undisclosed) => Gender::Undisclosed,
        Err(_) => {
            return Err(ApiError::invalid_field(
                "gender",
                format!("unknown value {value}"),
            ));
        }
    })
}

fn gender_to_proto(g: Gender) -> pb::Gender {
    match g {
        Gender::Unspecified => pb::Gender::Unspecified,
        Gender::Female => pb::Gender::Female,
        Gender::Male => pb::Gender::Male,
        Gender::Other => pb::Gender::Other,
        Gender::Undisclosed => pb::Gender::Undisclosed,
    }
}

pub(crate) fn income_band(value: i32) -> Result<IncomeBand, ApiError> {
    Ok(match pb::IncomeBand::try_from(value) {
        Ok(pb::IncomeBand::Unspecified) => IncomeBand::Unspecified,
        Ok(pb::IncomeBand::Low) => IncomeBand::Low,
        Ok(pb::IncomeBand::LowerMiddle) => IncomeBand::LowerMiddle,
        Ok(pb::IncomeBand::Middle) => IncomeBand::Middle,
        Ok(pb::IncomeBand::UpperMiddle) => IncomeBand::UpperMiddle,
        Ok(pb::IncomeBand::High) => IncomeBand::High,
        Err(_) => {
            return Err(ApiError::invalid_field(
                "income_band",
                format!("unknown value {value}"),
            ));
        }
    })
}

fn income_band_to_proto(b: IncomeBand) -> pb::IncomeBand {
    match b {
        IncomeBand::Unspecified => pb::IncomeBand::Unspecified,
        IncomeBand::Low => pb::IncomeBand::Low,
        IncomeBand::LowerMiddle => pb::IncomeBand::LowerMiddle,
        IncomeBand::Middle => pb::IncomeBand::Middle,
        IncomeBand::UpperMiddle => pb::IncomeBand::UpperMiddle,
        IncomeBand::High => pb::IncomeBand::High,
    }
}

fn consent(c: &common::MarketingConsent) -> MarketingConsent {
    MarketingConsent {
        email: c.email,
        sms: c.sms,
        phone: c.phone,
        push: c.push,
        post: c.post,
    }
}

fn consent_to_proto(c: MarketingConsent) -> common::MarketingConsent {
    common::MarketingConsent {
        email: c.email,
        sms: c.sms,
        phone: c.phone,
        push: c.push,
        post: c.post,
    }
}

pub(crate) fn customer_to_proto(c: &Customer) -> pb::Customer {
    let f = &c.fields;
    pb::Customer {
        id: c.id.clone(),
        external_id: f.external_id.clone(),
        display_name: f.display_name.clone(),
        email: f.email.clone(),
        phone: f.phone.clone(),
        birth_date: f.birth_date.map(to_date),
        gender: gender_to_proto(f.gender) as i32,
        region: f.region.clone(),
        city: f.city.clone(),
        occupation: f.occupation.clone(),
        income_band: income_band_to_proto(f.income_band) as i32,
        tags: f.tags.clone(),
        attributes: f
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        marketing_consent: Some(consent_to_proto(f.marketing_consent)),
        relationship_start_date: f.relationship_start_date.map(to_date),
        create_time: Some(to_timestamp(c.create_time)),
        update_time: Some(to_timestamp(c.update_time)),
        etag: c.etag(),
        erase_time: c.erase_time.map(to_timestamp),
    }
}

pub(crate) fn transaction(
    t: &pb::Transaction,
    now: DateTime<Utc>,
) -> Result<Transaction, ApiError> {
    let mut v = Violations::new();
    let occurred_at = v.take(required_timestamp(t.occurred_at.as_ref(), "occurred_at"));
    let amount = v.take(required_money(t.amount.as_ref(), "amount"));
    let cost = v
        .take(t.cost.as_ref().map(|c| money(c, "cost")).transpose())
        .flatten();
    v.finish()?;
    let (Some(occurred_at), Some(amount)) = (occurred_at, amount) else {
        return Err(ApiError::internal("transaction conversion lost a field"));
    };
    Transaction {
        id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        occurred_at,
        amount,
        cost,
        channel: t.channel.clone(),
        product_id: t.product_id.clone(),
        category: t.category.clone(),
        // 0 is proto3's "unset": one unit.
        quantity: if t.quantity == 0 { 1 } else { t.quantity },
        region: t.region.clone(),
    }
    .validate(now)
}

pub(crate) fn transaction_to_proto(t: &Transaction) -> pb::Transaction {
    pb::Transaction {
        id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        occurred_at: Some(to_timestamp(t.occurred_at)),
        amount: Some(to_money(t.amount)),
        cost: t.cost.map(to_money),
        channel: t.channel.clone(),
        product_id: t.product_id.clone(),
        category: t.category.clone(),
        quantity: t.quantity,
        region: t.region.clone(),
        create_time: None,
    }
}

pub(crate) fn event(e: &pb::Event, now: DateTime<Utc>) -> Result<Event, ApiError> {
    let mut v = Violations::new();
    let occurred_at = v.take(required_timestamp(e.occurred_at.as_ref(), "occurred_at"));
    let kind = match pb::EventKind::try_from(e.kind) {
        Ok(pb::EventKind::PageView) => Some(EventKind::PageView),
        Ok(pb::EventKind::ProductView) => Some(EventKind::ProductView),
        Ok(pb::EventKind::Search) => Some(EventKind::Search),
        Ok(pb::EventKind::AddToCart) => Some(EventKind::AddToCart),
        Ok(pb::EventKind::Click) => Some(EventKind::Click),
        Ok(pb::EventKind::Unspecified) | Err(_) => {
            v.add(
                "kind",
                "must be one of PAGE_VIEW, PRODUCT_VIEW, SEARCH, ADD_TO_CART, CLICK",
            );
            None
        }
    };
    v.finish()?;
    let (Some(occurred_at), Some(kind)) = (occurred_at, kind) else {
        return Err(ApiError::internal("event conversion lost a field"));
    };
    Event {
        id: e.id.clone(),
        customer_id: e.customer_id.clone(),
        kind,
        occurred_at,
        properties: e
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
    .validate(now)
}

pub(crate) fn event_to_proto(e: &Event) -> pb::Event {
    let kind = match e.kind {
        EventKind::PageView => pb::EventKind::PageView,
        EventKind::ProductView => pb::EventKind::ProductView,
        EventKind::Search => pb::EventKind::Search,
        EventKind::AddToCart => pb::EventKind::AddToCart,
        EventKind::Click => pb::EventKind::Click,
    };
    pb::Event {
        id: e.id.clone(),
        customer_id: e.customer_id.clone(),
        kind: kind as i32,
        occurred_at: Some(to_timestamp(e.occurred_at)),
        properties: e
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        create_time: None,
    }
}

pub(crate) fn interaction(
    i: &pb::Interaction,
    now: DateTime<Utc>,
) -> Result<Interaction, ApiError> {
    let mut v = Violations::new();
    let occurred_at = v.take(required_timestamp(i.occurred_at.as_ref(), "occurred_at"));
    let kind = match pb::InteractionKind::try_from(i.kind) {
        Ok(pb::InteractionKind::Call) => Some(InteractionKind::Call),
        Ok(pb::InteractionKind::Email) => Some(InteractionKind::Email),
        Ok(pb::InteractionKind::Visit) => Some(InteractionKind::Visit),
        Ok(pb::InteractionKind::Chat) => Some(InteractionKind::Chat),
        Ok(pb::InteractionKind::Unspecified) | Err(_) => {
            v.add("kind", "must be one of CALL, EMAIL, VISIT, CHAT");
            None
        }
    };
    v.finish()?;
    let (Some(occurred_at), Some(kind)) = (occurred_at, kind) else {
        return Err(ApiError::internal("interaction conversion lost a field"));
    };
    Interaction {
        id: i.id.clone(),
        customer_id: i.customer_id.clone(),
        kind,
        occurred_at,
        rep: i.rep.clone(),
        outcome: i.outcome.clone(),
        notes: i.notes.clone(),
    }
    .validate(now)
}

pub(crate) fn interaction_to_proto(i: &Interaction) -> pb::Interaction {
    let kind = match i.kind {
        InteractionKind::Call => pb::InteractionKind::Call,
        InteractionKind::Email => pb::InteractionKind::Email,
        InteractionKind::Visit => pb::InteractionKind::Visit,
        InteractionKind::Chat => pb::InteractionKind::Chat,
    };
    pb::Interaction {
        id: i.id.clone(),
        customer_id: i.customer_id.clone(),
        kind: kind as i32,
        occurred_at: Some(to_timestamp(i.occurred_at)),
        rep: i.rep.clone(),
        outcome: i.outcome.clone(),
        notes: i.notes.clone(),
        create_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_proto::google::r#type::Date;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let c = pb::Customer {
            external_id: "x".into(),
            email: "nope".into(),
            gender: 42,
            birth_date: Some(Date {
                year: 1990,
                month: 13,
                day: 1,
            }),
            ..Default::default()
        };
        let err = customer_fields(&c, today()).unwrap_err();
        let mut fields: Vec<_> = err.violations.iter().map(|v| v.field.clone()).collect();
        fields.sort();
        assert_eq!(fields, ["birth_date", "email", "gender"]);
    }

    #[test]
    fn round_trip() {
        let c = pb::Customer {
            external_id: "crm-9".into(),
            display_name: "Grace".into(),
            email: "grace@example.org".into(),
            gender: pb::Gender::Female as i32,
            income_band: pb::IncomeBand::High as i32,
            birth_date: Some(Date {
                year: 1906,
                month: 12,
                day: 9,
            }),
            tags: vec!["vip".into()],
            marketing_consent: Some(common::MarketingConsent {
                email: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields = customer_fields(&c, today()).unwrap();
        let now = chrono::Utc::now();
        let stored = Customer {
            id: "id-1".into(),
            fields,
            create_time: now,
            update_time: now,
            version: 1,
            erase_time: None,
        };
        let back = customer_to_proto(&stored);
        assert_eq!(back.external_id, c.external_id);
        assert_eq!(back.birth_date, c.birth_date);
        assert_eq!(back.gender, c.gender);
        assert_eq!(back.income_band, c.income_band);
        assert_eq!(back.marketing_consent, c.marketing_consent);
        assert_eq!(back.etag, "\"1\"");
    }
}
