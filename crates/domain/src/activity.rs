//! What customers do: purchase transactions, behaviour events, and contact
//! history (interactions). Each carries a client-supplied id that is its
//! idempotency key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::{ApiError, Money, Violations};

pub const MAX_ID_LEN: usize = 128;
const MAX_LABEL_LEN: usize = 200;
const MAX_NOTES_LEN: usize = 10_000;
const MAX_PROPERTIES: usize = 50;

/// A purchase, or with a negative amount a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    pub customer_id: String,
    pub occurred_at: DateTime<Utc>,
    pub amount: Money,
    pub cost: Option<Money>,
    pub channel: String,
    pub product_id: String,
    pub category: String,
    pub quantity: i32,
    pub region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    PageView,
    ProductView,
    Search,
    AddToCart,
    Click,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::PageView,
        EventKind::ProductView,
        EventKind::Search,
        EventKind::AddToCart,
        EventKind::Click,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PageView => "page_view",
            EventKind::ProductView => "product_view",
            EventKind::Search => "search",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Click => "click",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A behaviour event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub customer_id: String,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InteractionKind {
    Call,
    Email,
    Visit,
    Chat,
}

impl InteractionKind {
    pub const ALL: [InteractionKind; 4] = [
        InteractionKind::Call,
        InteractionKind::Email,
        InteractionKind::Visit,
        InteractionKind::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InteractionKind::Call => "call",
            InteractionKind::Email => "email",
            InteractionKind::Visit => "visit",
            InteractionKind::Chat => "chat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One contact with a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub id: String,
    pub customer_id: String,
    pub kind: InteractionKind,
    pub occurred_at: DateTime<Utc>,
    pub rep: String,
    pub outcome: String,
    /// Free text: personal data, removed on erasure.
    pub notes: String,
}

/// Checks a client-supplied id (idempotency key) or a referenced id.
pub fn check_id(v: &mut Violations, field: &str, id: &str) {
    if id.is_empty() {
        v.add(field, "is required");
    } else if id.len() > MAX_ID_LEN {
        v.add(field, format!("must be at most {MAX_ID_LEN} bytes"));
    } else if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        v.add(field, "must not contain spaces or control characters");
    }
}

fn check_label(v: &mut Violations, field: &str, value: &str) {
    if value.len() > MAX_LABEL_LEN {
        v.add(field, format!("must be at most {MAX_LABEL_LEN} bytes"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// Latest accepted `occurred_at`: clocks drift, but not by a day.
fn check_not_future(v: &mut Violations, field: &str, at: DateTime<Utc>, now: DateTime<Utc>) {
    if at > now + chrono::Duration::days(1) {
        v.add(field, "must not be in the future");
    }
}

impl Transaction {
    /// Field paths are relative to the transaction.
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        check_id(&mut v, "id", &self.id);
        check_id(&mut v, "customer_id", &self.customer_id);
        check_not_future(&mut v, "occurred_at", self.occurred_at, now);
        if let Some(cost) = self.cost {
            if cost.currency != self.amount.currency {
                v.add("cost.currency_code", "must be the currency of amount");
            } else if cost.nanos < 0 {
                v.add("cost", "must not be negative");
            }
        }
        if self.quantity < 1 {
            v.add("quantity", "must be at least 1");
        } else if self.quantity > 1_000_000 {
            v.add("quantity", "must be at most 1,000,000");
        }
        for (field, value) in [
            ("channel", &self.channel),
            ("product_id", &self.product_id),
            ("category", &self.category),
            ("region", &self.region),
        ] {
            check_label(&mut v, field, value);
        }
        v.finish().map(|()| self)
    }
}

impl Event {
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        check_id(&mut v, "id", &self.id);
        check_id(&mut v, "customer_id", &self.customer_id);
        check_not_future(&mut v, "occurred_at", self.occurred_at, now);
        if self.properties.len() > MAX_PROPERTIES {
            v.add("properties", format!("at most {MAX_PROPERTIES} properties"));
        }
        for (key, value) in &self.properties {
            if key.is_empty() || key.len() > 64 || value.len() > 1024 {
                v.add(
                    format!("properties[{key:?}]"),
                    "keys must be 1 to 64 bytes and values at most 1024",
                );
            }
        }
        v.finish().map(|()| self)
    }
}

impl Interaction {
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        check_id(&mut v, "id", &self.id);
        check_id(&mut v, "customer_id", &self.customer_id);
        check_not_future(&mut v, "occurred_at", self.occurred_at, now);
        check_label(&mut v, "rep", &self.rep);
        check_label(&mut v, "outcome", &self.outcome);
        if self.notes.len() > MAX_NOTES_LEN {
            v.add("notes", format!("must be at most {MAX_NOTES_LEN} bytes"));
        }
        v.finish().map(|()| self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> Transaction {
        Transaction {
            id: "t1".into(),
            customer_id: "c1".into(),
            occurred_at: Utc::now(),
            amount: Money::from_parts("EUR", 10, 0).unwrap(),
            cost: None,
            channel: "web".into(),
            product_id: "p".into(),
            category: "books".into(),
            quantity: 1,
            region: "East".into(),
        }
    }

    #[test]
    fn a_valid_transaction_passes() {
        assert!(tx().validate(Utc::now()).is_ok());
    }

    #[test]
    fn bad_transactions_name_each_field() {
        let t = Transaction {
            id: String::new(),
            quantity: 0,
            cost: Some(Money::from_parts("USD", 1, 0).unwrap()),
            occurred_at: Utc::now() + chrono::Duration::days(3),
            ..tx()
        };
        let err = t.validate(Utc::now()).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["id", "occurred_at", "cost.currency_code", "quantity"]
        );
    }
}
