//! `UpdateCustomer.update_mask` (AIP-134/161).

use patron_domain::{ApiError, customer::CustomerFields};

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

/// Copies the masked fields of `incoming` onto `current`. An empty mask or
/// `*` replaces every mutable field.
pub(crate) fn apply(
    current: &CustomerFields,
    incoming: &CustomerFields,
    paths: &[String],
) -> Result<CustomerFields, ApiError> {
    let mut out = current.clone();
    let all: Vec<String>;
    let paths = if paths.is_empty() || paths.iter().any(|p| p == "*") {
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
    fn bad_paths_are_rejected() {
        let f = fields("A", "");
        for path in ["nope", "id", "etag", "marketing_consent.fax"] {
            let err = apply(&f, &f, &[path.into()]).unwrap_err();
            assert_eq!(err.violations[0].field, "update_mask", "{path}");
        }
    }
}
