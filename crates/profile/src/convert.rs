//! Wire <-> domain conversions of the profile service.

use chrono::NaiveDate;
use patron_domain::{
    ApiError, Violations,
    customer::{Customer, CustomerFields, Gender, IncomeBand, MarketingConsent},
};
use patron_proto::{common, profile as pb};
use patron_runtime::convert::{date, to_date, to_timestamp};

/// Validates a wire customer into domain fields, reporting every bad field.
/// Field paths are relative to the customer (`email`, `birth_date`, ...).
pub(crate) fn customer_fields(
    c: &pb::Customer,
    today: NaiveDate,
) -> Result<CustomerFields, ApiError> {
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
    let validated = v.take(fields.validate(today));
    v.finish()?;
    validated.ok_or_else(|| ApiError::internal("validation returned neither value nor error"))
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
