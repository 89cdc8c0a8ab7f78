//! Customers.

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError,
    customer::{Customer, CustomerFields, Gender, IncomeBand, MarketingConsent},
};
use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};

use super::{
    ChangeKind, NewChange, ProfileStore,
    entity::{customer, request},
    feed,
};
use crate::db_error;

impl ProfileStore {
    /// Creates a customer. With a `request_key`, a retry of the same request
    /// returns the customer the first attempt created, also when both
    /// attempts race.
    pub async fn create_customer(
        &self,
        id: String,
        fields: CustomerFields,
        request_key: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Customer, ApiError> {
        if let Some(key) = &request_key
            && let Some(existing) = self.customer_for_request(key).await?
        {
            return Ok(existing);
        }
        let customer = Customer {
            id,
            fields,
            create_time: now,
            update_time: now,
            version: 1,
            erase_time: None,
        };
        match self
            .insert_customer(&customer, request_key.as_deref(), now)
            .await
        {
            Ok(()) => Ok(customer),
            Err(err) if err.code == patron_domain::ErrorCode::AlreadyExists => {
                // Lost a race against a retry of the same request?
                if let Some(key) = &request_key
                    && let Some(existing) = self.customer_for_request(key).await?
                {
                    return Ok(existing);
                }
                Err(ApiError::already_exists(format!(
                    "a customer with external_id {:?} already exists",
                    customer.fields.external_id
                )))
            }
            Err(err) => Err(err),
        }
    }

    async fn insert_customer(
        &self,
        customer: &Customer,
        request_key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let txn = self.db.begin().await.map_err(db_error)?;
        customer::Entity::insert(to_active(customer))
            .exec_without_returning(&txn)
            .await
            .map_err(db_error)?;
        if let Some(key) = request_key {
            request::Entity::insert(request::ActiveModel {
                request_key: Set(key.to_owned()),
                resource_id: Set(customer.id.clone()),
                create_time: Set(now),
            })
            .exec_without_returning(&txn)
            .await
            .map_err(db_error)?;
        }
        let change = NewChange {
            kind: ChangeKind::Customer,
            customer_id: customer.id.clone(),
            payload: self.codec.customer(customer),
        };
        feed::append(&txn, vec![change], now).await?;
        txn.commit().await.map_err(db_error)
    }

    async fn customer_for_request(&self, key: &str) -> Result<Option<Customer>, ApiError> {
        let Some(req) = request::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        self.get_customer(&req.resource_id).await.map(Some)
    }

    pub async fn get_customer(&self, id: &str) -> Result<Customer, ApiError> {
        customer::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
            .map(from_model)
            .ok_or_else(|| ApiError::not_found("customer", id))
    }
}

pub(super) fn to_active(c: &Customer) -> customer::ActiveModel {
    let f = &c.fields;
    customer::ActiveModel {
        id: Set(c.id.clone()),
        external_id: Set(f.external_id.clone()),
        display_name: Set(f.display_name.clone()),
        email: Set(f.email.clone()),
        phone: Set(f.phone.clone()),
        birth_date: Set(f.birth_date),
        gender: Set(f.gender.as_str().to_owned()),
        region: Set(f.region.clone()),
        city: Set(f.city.clone()),
        occupation: Set(f.occupation.clone()),
        income_band: Set(f.income_band.as_str().to_owned()),
        tags: Set(encode_tags(&f.tags)),
        attributes: Set(serde_json::to_string(&f.attributes).unwrap_or_else(|_| "{}".into())),
        consent_email: Set(f.marketing_consent.email),
        consent_sms: Set(f.marketing_consent.sms),
        consent_phone: Set(f.marketing_consent.phone),
        consent_push: Set(f.marketing_consent.push),
        consent_post: Set(f.marketing_consent.post),
        relationship_start_date: Set(f.relationship_start_date),
        create_time: Set(c.create_time),
        update_time: Set(c.update_time),
        version: Set(c.version),
        erase_time: Set(c.erase_time),
    }
}

pub(super) fn from_model(m: customer::Model) -> Customer {
    Customer {
        id: m.id,
        fields: CustomerFields {
            external_id: m.external_id,
            display_name: m.display_name,
            email: m.email,
            phone: m.phone,
            birth_date: m.birth_date,
            gender: Gender::parse(&m.gender).unwrap_or_default(),
            region: m.region,
            city: m.city,
            occupation: m.occupation,
            income_band: IncomeBand::parse(&m.income_band).unwrap_or_default(),
            tags: decode_tags(&m.tags),
            attributes: serde_json::from_str(&m.attributes).unwrap_or_default(),
            marketing_consent: MarketingConsent {
                email: m.consent_email,
                sms: m.consent_sms,
                phone: m.consent_phone,
                push: m.consent_push,
                post: m.consent_post,
            },
            relationship_start_date: m.relationship_start_date,
        },
        create_time: m.create_time,
        update_time: m.update_time,
        version: m.version,
        erase_time: m.erase_time,
    }
}

/// `["a", "b"]` -> `"|a|b|"`, so a tag match is `LIKE '%|vip|%'`.
fn encode_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        String::new()
    } else {
        format!("|{}|", tags.join("|"))
    }
}

fn decode_tags(s: &str) -> Vec<String> {
    s.split('|')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}
