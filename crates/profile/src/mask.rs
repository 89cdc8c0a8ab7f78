//! `UpdateCustomer.update_mask` (AIP-134/161).

use patron_domain::{ApiError, customer::CustomerFields};
use patron_proto::profile as pb;

const MUTABLE: &[&str] = &[
    "external_id",
    "display_name",
    "email",
    "phone",
    "birth_date",
    "gender",
    "region",
    "city",
    "occupation",
    "income_band",
    "tags",
    "attributes",
    "marketing_consent",
    "relationship_start_date",
];
const OUTPUT_ONLY: &[&str] = &["id", "create_time", "update_time", "etag", "erase_time"];

/// The mask a request without one implies (AIP-134): the mutable fields
/// `customer` sets (a non-empty text, list or map, a date, a gender or
/// income band other than unspecified, a consent message). So a client
/// that leaves the mask out changes what it sent and nothing else; `*`
/// replaces every mutable field, clearing the ones not sent.
pub(crate) fn implied(customer: &pb::Customer) -> Vec<String> {
    let set = [
        ("external_id", !customer.external_id.is_empty()),
        ("display_name", !customer.display_name.is_empty()),
        ("email", !customer.email.is_empty()),
        ("phone", !customer.phone.is_empty()),
        ("birth_date", customer.birth_date.is_some()),
        ("gender", customer.gender != 0),
        ("region", !customer.region.is_empty()),
        ("city", !customer.city.is_empty()),
        ("occupation", !customer.occupation.is_empty()),
        ("income_band", customer.income_band != 0),
        ("tags", !customer.tags.is_empty()),
        ("attributes", !customer.attributes.is_empty()),
        ("marketing_consent", customer.marketing_consent.is_some()),
        (
            "relationship_start_date",
            customer.relationship_start_date.is_some(),
        ),
    ];
    debug_assert_eq!(set.len(), MUTABLE.len());
    set.into_iter()
        .filter(|(_, set)| *set)
        .map(|(path, _)| path.to_owned())
        .collect()
}

/// Copies the masked fields of `incoming` onto `current`; `*` replaces
/// every mutable field. (An absent mask is [`implied`] by the caller.)
pub(crate) fn apply(
    current: &CustomerFields,
    incoming: &CustomerFields,
    paths: &[String],
) -> Result<CustomerFields, ApiError> {
    let mut out = current.clone();
    let all: Vec<String>;
    let paths = if paths.iter().any(|p| p == "*") {
        all = MUTABLE.iter().map(|p| (*p).to_owned()).collect();
        &all
    } else {
        paths
    };
    for path in paths {
        match path.as_str() {
            "external_id" => out.external_id = incoming.external_id.clone(),
            "display_name" => out.display_name = incoming.display_name.clone(),
            "email" => out.email = incoming.email.clone(),
            "phone" => out.phone = incoming.phone.clone(),
            "birth_date" => out.birth_date = incoming.birth_date,
            "gender" => out.gender = incoming.gender,
            "region" => out.region = incoming.region.clone(),
            "city" => out.city = incoming.city.clone(),
            "occupation" => out.occupation = incoming.occupation.clone(),
            "income_band" => out.income_band = incoming.income_band,
            "tags" => out.tags = incoming.tags.clone(),
            "attributes" => out.attributes = incoming.attributes.clone(),
            "marketing_consent" => out.marketing_consent = incoming.marketing_consent,
            "relationship_start_date" => {
                out.relationship_start_date = incoming.relationship_start_date
            }
            p if p.starts_with("marketing_consent.") => {
                let channel = &p["marketing_consent.".len()..];
                let value = incoming.marketing_consent.channel(channel).ok_or_else(|| {
                    ApiError::invalid_field(
                        "update_mask",
                        format!("unknown consent channel in {p:?}"),
                    )
                })?;
                out.marketing_consent.set_channel(channel, value);
            }
            p if p.starts_with("attributes.") => {
                let key = &p["attributes.".len()..];
                match incoming.attributes.get(key) {
                    Some(v) => out.attributes.insert(key.to_owned(), v.clone()),
                    None => out.attributes.remove(key),
                };
            }
            p if OUTPUT_ONLY.contains(&p) => {
                return Err(ApiError::invalid_field(
                    "update_mask",
                    format!("{p:?} is output only"),
                ));
            }
            p => {
                return Err(ApiError::invalid_field(
                    "update_mask",
                    format!("unknown field {p:?}; updatable: {}", MUTABLE.join(", ")),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str, email: &str) -> CustomerFields {
        CustomerFields {
            external_id: "x".into(),
            display_name: name.into(),
            email: email.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_masked_fields_change() {
        let current = fields("Old", "old@example.com");
        let incoming = fields("New", "");
        let out = apply(&current, &incoming, &["display_name".into()]).unwrap();
        assert_eq!(out.display_name, "New");
        assert_eq!(out.email, "old@example.com");
    }

    #[test]
    fn consent_channels_and_attribute_keys() {
        let mut current = fields("A", "");
        current.attributes.insert("keep".into(), "1".into());
        current.attributes.insert("drop".into(), "2".into());
        let mut incoming = fields("A", "");
        incoming.marketing_consent.sms = true;
        incoming.marketing_consent.email = true;
        let out = apply(
            &current,
            &incoming,
            &["marketing_consent.sms".into(), "attributes.drop".into()],
        )
        .unwrap();
        assert!(out.marketing_consent.sms && !out.marketing_consent.email);
        assert_eq!(out.attributes.len(), 1);
    }

    #[test]
    fn without_a_mask_only_the_fields_sent_change() {
        let sent = pb::Customer {
            id: "ignored".into(),
            display_name: "New".into(),
            tags: vec!["vip".into()],
            etag: "ignored".into(),
            ..Default::default()
        };
        assert_eq!(implied(&sent), ["display_name", "tags"]);
        assert!(implied(&pb::Customer::default()).is_empty());
        let mut current = fields("Old", "old@example.com");
        current.region = "East".into();
        let mut incoming = fields("New", "");
        incoming.tags = vec!["vip".into()];
        let out = apply(&current, &incoming, &implied(&sent)).unwrap();
        assert_eq!(
            (
                out.display_name.as_str(),
                out.email.as_str(),
                out.region.as_str()
            ),
            ("New", "old@example.com", "East")
        );
        assert_eq!(out.tags, ["vip"]);
        // `*` replaces everything, clearing what was not sent.
        let out = apply(&current, &incoming, &["*".into()]).unwrap();
        assert_eq!((out.email.as_str(), out.region.as_str()), ("", ""));
    }

    #[test]
    fn bad_paths_are_rejected() {
        let f = fields("A", "");
        for path in ["nope", "id", "etag", "marketing_consent.fax"] {
            let err = apply(&f, &f, &[path.into()]).unwrap_err();
            assert_eq!(err.violations[0].field, "update_mask", "{path}");
        }
    }
}
