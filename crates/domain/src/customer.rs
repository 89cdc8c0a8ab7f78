//! The unified customer record and the rules its fields obey.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::error::{ApiError, Violations};

pub const MAX_EXTERNAL_ID_LEN: usize = 128;
pub const MAX_TEXT_LEN: usize = 200;
pub const MAX_TAGS: usize = 100;
pub const MAX_ATTRIBUTES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gender {
    #[default]
    Unspecified,
    Female,
    Male,
    Other,
    Undisclosed,
}

impl Gender {
    pub const ALL: [Gender; 5] = [
        Gender::Unspecified,
        Gender::Female,
        Gender::Male,
        Gender::Other,
        Gender::Undisclosed,
    ];

    /// Storage and filter spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Unspecified => "",
            Gender::Female => "female",
            Gender::Male => "male",
            Gender::Other => "other",
            Gender::Undisclosed => "undisclosed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncomeBand {
    #[default]
    Unspecified,
    Low,
    LowerMiddle,
    Middle,
    UpperMiddle,
    High,
}

impl IncomeBand {
    pub const ALL: [IncomeBand; 6] = [
        IncomeBand::Unspecified,
        IncomeBand::Low,
        IncomeBand::LowerMiddle,
        IncomeBand::Middle,
        IncomeBand::UpperMiddle,
        IncomeBand::High,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncomeBand::Unspecified => "",
            IncomeBand::Low => "low",
            IncomeBand::LowerMiddle => "lower_middle",
            IncomeBand::Middle => "middle",
            IncomeBand::UpperMiddle => "upper_middle",
            IncomeBand::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s))
    }
}

/// Marketing consent per contact channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarketingConsent {
    pub email: bool,
    pub sms: bool,
    pub phone: bool,
    pub push: bool,
    pub post: bool,
}

impl MarketingConsent {
    pub const CHANNELS: [&'static str; 5] = ["email", "sms", "phone", "push", "post"];

    pub fn channel(&self, name: &str) -> Option<bool> {
        Some(match name {
            "email" => self.email,
            "sms" => self.sms,
            "phone" => self.phone,
            "push" => self.push,
            "post" => self.post,
            _ => return None,
        })
    }

    pub fn set_channel(&mut self, name: &str, value: bool) -> bool {
        let slot = match name {
            "email" => &mut self.email,
            "sms" => &mut self.sms,
            "phone" => &mut self.phone,
            "push" => &mut self.push,
            "post" => &mut self.post,
            _ => return false,
        };
        *slot = value;
        true
    }
}

/// The fields a client controls. Built only through [`CustomerFields::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerFields {
    pub external_id: String,
    pub display_name: String,
    /// Lower-cased, structurally valid address, or empty.
    pub email: String,
    /// E.164 (`+` and 8 to 15 digits), or empty.
    pub phone: String,
    pub birth_date: Option<NaiveDate>,
    pub gender: Gender,
    pub region: String,
    pub city: String,
    pub occupation: String,
    pub income_band: IncomeBand,
    /// Sorted, de-duplicated.
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub marketing_consent: MarketingConsent,
    pub relationship_start_date: Option<NaiveDate>,
}

/// A stored customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub fields: CustomerFields,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// Incremented on every change; the etag is derived from it.
    pub version: i64,
    pub erase_time: Option<DateTime<Utc>>,
}

impl Customer {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// Parses an etag produced by [`Customer::etag`] (quotes optional, `W/` tolerated).
pub fn parse_etag(etag: &str) -> Option<i64> {
    let e = etag.trim().trim_start_matches("W/").trim_matches('"');
    e.parse().ok()
}

impl CustomerFields {
    /// Normalises and validates every field, reporting all problems at once.
    /// `today` bounds dates (no birth dates in the future).
    pub fn validate(mut self, today: NaiveDate) -> Result<Self, ApiError> {
        let mut v = Violations::new();

        self.external_id = self.external_id.trim().to_owned();
        if self.external_id.is_empty() {
            v.add("external_id", "is required");
        } else if self.external_id.len() > MAX_EXTERNAL_ID_LEN {
            v.add(
                "external_id",
                format!("must be at most {MAX_EXTERNAL_ID_LEN} bytes"),
            );
        } else if self.external_id.chars().any(char::is_control) {
            v.add("external_id", "must not contain control characters");
        }

        for (name, value) in [
            ("display_name", &mut self.display_name),
            ("region", &mut self.region),
            ("city", &mut self.city),
            ("occupation", &mut self.occupation),
        ] {
            *value = value.trim().to_owned();
            if value.len() > MAX_TEXT_LEN {
                v.add(name, format!("must be at most {MAX_TEXT_LEN} bytes"));
            } else if value.chars().any(char::is_control) {
                v.add(name, "must not contain control characters");
            }
        }

        if !self.email.is_empty() {
            match normalize_email(&self.email) {
                Some(e) => self.email = e,
                None => v.add("email", "is not a valid email address"),
            }
        }
        if !self.phone.is_empty() {
            match normalize_phone(&self.phone) {
                Some(p) => self.phone = p,
                None => v.add("phone", "must be an E.164 number such as +4915112345678"),
            }
        }
        if let Some(d) = self.birth_date {
            if d > today {
                v.add("birth_date", "must not be in the future");
            } else if d.year() < 1900 {
                v.add("birth_date", "must be in 1900 or later");
            }
        }
        if self.relationship_start_date.is_some_and(|d| d > today) {
            v.add("relationship_start_date", "must not be in the future");
        }

        if self.tags.len() > MAX_TAGS {
            v.add("tags", format!("at most {MAX_TAGS} tags"));
        }
        for (i, tag) in self.tags.iter_mut().enumerate() {
            *tag = tag.trim().to_ascii_lowercase();
            if !is_valid_tag(tag) {
                v.add(
                    format!("tags[{i}]"),
                    "must be 1 to 64 of a-z, 0-9, '_' and '-'",
                );
            }
        }
        self.tags.sort_unstable();
        self.tags.dedup();

        if self.attributes.len() > MAX_ATTRIBUTES {
            v.add("attributes", format!("at most {MAX_ATTRIBUTES} attributes"));
        }
        for (key, value) in &self.attributes {
            if key.is_empty() || key.len() > 64 || key.chars().any(char::is_control) {
                v.add(
                    format!("attributes[{key:?}]"),
                    "key must be 1 to 64 printable bytes",
                );
            } else if value.len() > 1024 {
                v.add(
                    format!("attributes[{key:?}]"),
                    "value must be at most 1024 bytes",
                );
            }
        }

        v.finish().map(|()| self)
    }
}

fn is_valid_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A structural check (RFC 5321 lengths, one `@`, a dotted domain, no spaces);
/// deliverability is not our business. Returns the address lower-cased.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim();
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = email.rsplit_once('@')?;
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    let local_ok = !local.is_empty() && local.len() <= 64 && !local.contains('@');
    (domain_ok && local_ok).then(|| email.to_lowercase())
}

/// Accepts E.164 with common separators (spaces, dashes, dots, parentheses),
/// returns the canonical `+digits` form.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let rest = trimmed.strip_prefix('+')?;
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    ((8..=15).contains(&digits.len()) && !digits.starts_with('0')).then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
    }

    fn valid() -> CustomerFields {
        CustomerFields {
            external_id: "crm-1".into(),
            display_name: "Ada Lovelace".into(),
            email: "Ada@Example.COM".into(),
            phone: "+44 20 7946 0958".into(),
            tags: vec!["VIP".into(), "vip".into(), "newsletter".into()],
            ..Default::default()
        }
    }

    #[test]
    fn normalises_valid_input() {
        let f = valid().validate(today()).unwrap();
        assert_eq!(f.email, "ada@example.com");
        assert_eq!(f.phone, "+442079460958");
        assert_eq!(f.tags, vec!["newsletter", "vip"]);
    }

    #[test]
    fn reports_every_bad_field() {
        let f = CustomerFields {
            external_id: " ".into(),
            email: "not-an-email".into(),
            phone: "0170 123".into(),
            birth_date: NaiveDate::from_ymd_opt(2030, 1, 1),
            tags: vec!["bad tag".into()],
            ..Default::default()
        };
        let err = f.validate(today()).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["external_id", "email", "phone", "birth_date", "tags[0]"]
        );
    }

    #[test]
    fn email_rules() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(normalize_email(ok).is_some(), "{ok}");
        }
        for bad in ["", "a@b", "@b.co", "a b@c.de", "a@-b.co", "a@b..co"] {
            assert!(normalize_email(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn etag_round_trip() {
        assert_eq!(parse_etag("\"7\""), Some(7));
        assert_eq!(parse_etag("W/\"7\""), Some(7));
        assert_eq!(parse_etag("x"), None);
    }
}
