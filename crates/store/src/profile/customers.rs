//! Customers.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use patron_domain::{
    ApiError, ErrorCode, Violations,
    customer::{Customer, CustomerFields, Gender, IncomeBand, MarketingConsent},
    filter::{FieldSpec, FieldType, Filter},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use super::{
    ChangeKind, NewChange, ProfileStore,
    entity::{change, customer, erasure, request},
    feed,
};
use crate::{
    db_error,
    paging::Cursor,
    query::{self, Column},
};

/// The fields `ListCustomers.filter` accepts.
pub fn customer_filter_fields() -> &'static [FieldSpec] {
    const GENDERS: &[&str] = &["female", "male", "other", "undisclosed"];
    const BANDS: &[&str] = &["low", "lower_middle", "middle", "upper_middle", "high"];
    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            name: "external_id",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "display_name",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "email",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "phone",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "region",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "city",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "occupation",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "gender",
            ty: FieldType::Enum(GENDERS),
        },
        FieldSpec {
            name: "income_band",
            ty: FieldType::Enum(BANDS),
        },
        FieldSpec {
            name: "tags",
            ty: FieldType::Tags,
        },
        FieldSpec {
            name: "birth_date",
            ty: FieldType::Date,
        },
        FieldSpec {
            name: "relationship_start_date",
            ty: FieldType::Date,
        },
        FieldSpec {
            name: "create_time",
            ty: FieldType::Timestamp,
        },
        FieldSpec {
            name: "update_time",
            ty: FieldType::Timestamp,
        },
        FieldSpec {
            name: "erased",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "marketing_consent.email",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "marketing_consent.sms",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "marketing_consent.phone",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "marketing_consent.push",
            ty: FieldType::Bool,
        },
        FieldSpec {
            name: "marketing_consent.post",
            ty: FieldType::Bool,
        },
    ];
    FIELDS
}

fn filter_column(field: &str) -> Option<Column> {
    Some(match field {
        "tags" => Column::Delimited("tags"),
        "erased" => Column::IsSet("erase_time"),
        "marketing_consent.email" => Column::Plain("consent_email"),
        "marketing_consent.sms" => Column::Plain("consent_sms"),
        "marketing_consent.phone" => Column::Plain("consent_phone"),
        "marketing_consent.push" => Column::Plain("consent_push"),
        "marketing_consent.post" => Column::Plain("consent_post"),
        other => Column::Plain(
            customer_filter_fields()
                .iter()
                .find(|f| f.name == other)?
                .name,
        ),
    })
}

/// Sort keys of `ListCustomers.order_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    Id,
    CreateTime,
    UpdateTime,
    DisplayName,
    ExternalId,
    Region,
    City,
}

impl OrderField {
    pub const ALL: [(&'static str, OrderField); 7] = [
        ("id", OrderField::Id),
        ("create_time", OrderField::CreateTime),
        ("update_time", OrderField::UpdateTime),
        ("display_name", OrderField::DisplayName),
        ("external_id", OrderField::ExternalId),
        ("region", OrderField::Region),
        ("city", OrderField::City),
    ];

    fn column(self) -> customer::Column {
        match self {
            OrderField::Id => customer::Column::Id,
            OrderField::CreateTime => customer::Column::CreateTime,
            OrderField::UpdateTime => customer::Column::UpdateTime,
            OrderField::DisplayName => customer::Column::DisplayName,
            OrderField::ExternalId => customer::Column::ExternalId,
            OrderField::Region => customer::Column::Region,
            OrderField::City => customer::Column::City,
        }
    }

    fn is_time(self) -> bool {
        matches!(self, OrderField::CreateTime | OrderField::UpdateTime)
    }

    /// The cursor key of a row.
    fn key_of(self, c: &Customer) -> String {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        match self {
            OrderField::Id => String::new(),
            OrderField::CreateTime => time(c.create_time),
            OrderField::UpdateTime => time(c.update_time),
            OrderField::DisplayName => c.fields.display_name.clone(),
            OrderField::ExternalId => c.fields.external_id.clone(),
            OrderField::Region => c.fields.region.clone(),
            OrderField::City => c.fields.city.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerOrder {
    pub field: OrderField,
    pub descending: bool,
}

impl Default for CustomerOrder {
    fn default() -> Self {
        Self {
            field: OrderField::Id,
            descending: false,
        }
    }
}

/// A `ListCustomers` query.
#[derive(Debug, Clone, Default)]
pub struct CustomerQuery {
    pub filter: Option<Filter>,
    pub order: CustomerOrder,
    pub page_size: u64,
    pub after: Option<Cursor>,
}

pub struct CustomerPage {
    pub customers: Vec<Customer>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    pub total_size: u64,
}

/// What an upsert did to one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
}

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
            Err(err) if err.code == ErrorCode::AlreadyExists => {
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
        let txn = crate::begin_write(&self.db).await?;
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
        let last = feed::append(&txn, vec![change], now).await?;
        txn.commit().await.map_err(db_error)?;
        self.committed(last);
        Ok(())
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

    /// The customers with these ids that exist, keyed by id.
    pub async fn get_customers(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Customer>, ApiError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let rows = customer::Entity::find()
                .filter(customer::Column::Id.is_in(crate::query::padded(chunk)))
                .all(&self.db)
                .await
                .map_err(db_error)?;
            out.extend(rows.into_iter().map(|m| (m.id.clone(), from_model(m))));
        }
        Ok(out)
    }

    /// Creates or updates customers by `external_id` in one transaction.
    /// `ids` supplies the id of each customer that turns out to be new.
    pub async fn upsert_customers(
        &self,
        batch: Vec<CustomerFields>,
        mut new_id: impl FnMut() -> String,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Customer, UpsertOutcome)>, ApiError> {
        let txn = crate::begin_write(&self.db).await?;
        let external_ids: Vec<String> = batch.iter().map(|f| f.external_id.clone()).collect();
        let mut existing: HashMap<String, Customer> = HashMap::with_capacity(batch.len());
        for chunk in external_ids.chunks(1_000) {
            let rows = customer::Entity::find()
                .filter(customer::Column::ExternalId.is_in(crate::query::padded(chunk)))
                .all(&txn)
                .await
                .map_err(db_error)?;
            existing.extend(
                rows.into_iter()
                    .map(|m| (m.external_id.clone(), from_model(m))),
            );
        }

        let mut v = Violations::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut inserts = Vec::new();
        let mut changes = Vec::new();
        for (i, fields) in batch.into_iter().enumerate() {
            match existing.get(&fields.external_id) {
                Some(old) if old.erase_time.is_some() => {
                    v.add(
                        format!("customers[{i}].external_id"),
                        "this customer was erased",
                    );
                }
                Some(old) if old.fields == fields => {
                    results.push((old.clone(), UpsertOutcome::Unchanged))
                }
                Some(old) => {
                    let updated = Customer {
                        fields,
                        update_time: now,
                        version: old.version + 1,
                        ..old.clone()
                    };
                    let res = customer::Entity::update_many()
                        .set(to_active(&updated))
                        .filter(customer::Column::Id.eq(old.id.clone()))
                        .filter(customer::Column::Version.eq(old.version))
                        .exec(&txn)
                        .await
                        .map_err(db_error)?;
                    if res.rows_affected != 1 {
                        return Err(ApiError::aborted(
                            "CONCURRENT_MODIFICATION",
                            format!(
                                "customer {:?} changed concurrently; retry",
                                old.fields.external_id
                            ),
                        ));
                    }
                    changes.push(NewChange {
                        kind: ChangeKind::Customer,
                        customer_id: updated.id.clone(),
                        payload: self.codec.customer(&updated),
                    });
                    results.push((updated, UpsertOutcome::Updated));
                }
                None => {
                    let created = Customer {
                        id: new_id(),
                        fields,
                        create_time: now,
                        update_time: now,
                        version: 1,
                        erase_time: None,
                    };
                    inserts.push(to_active(&created));
                    changes.push(NewChange {
                        kind: ChangeKind::Customer,
                        customer_id: created.id.clone(),
                        payload: self.codec.customer(&created),
                    });
                    results.push((created, UpsertOutcome::Created));
                }
            }
        }
        v.finish()?;
        // 24 columns per row; keep statements under SQLite's parameter limit.
        for chunk in inserts.chunks(1_000) {
            customer::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await
                .map_err(|e| match db_error(e) {
                    err if err.code == ErrorCode::AlreadyExists => ApiError::aborted(
                        "CONCURRENT_MODIFICATION",
                        "a customer in this batch was created concurrently; retry",
                    ),
                    err => err,
                })?;
        }
        let last = feed::append(&txn, changes, now).await?;
        txn.commit().await.map_err(db_error)?;
        self.committed(last);
        Ok(results)
    }

    /// Writes `updated` if the stored version is still `expected_version`.
    pub async fn update_customer(
        &self,
        updated: &Customer,
        expected_version: i64,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let txn = crate::begin_write(&self.db).await?;
        let res = customer::Entity::update_many()
            .set(to_active(updated))
            .filter(customer::Column::Id.eq(updated.id.clone()))
            .filter(customer::Column::Version.eq(expected_version))
            .filter(customer::Column::EraseTime.is_null())
            .exec(&txn)
            .await
            .map_err(|e| match db_error(e) {
                err if err.code == ErrorCode::AlreadyExists => ApiError::already_exists(format!(
                    "a customer with external_id {:?} already exists",
                    updated.fields.external_id
                )),
                err => err,
            })?;
        if res.rows_affected != 1 {
            let current = self.get_customer(&updated.id).await?;
            return Err(if current.erase_time.is_some() {
                ApiError::failed_precondition("CUSTOMER_ERASED", "the customer was erased")
            } else {
                ApiError::aborted(
                    "ETAG_MISMATCH",
                    format!("the customer changed since etag {expected_version}; read it again"),
                )
            });
        }
        let change = NewChange {
            kind: ChangeKind::Customer,
            customer_id: updated.id.clone(),
            payload: self.codec.customer(updated),
        };
        let last = feed::append(&txn, vec![change], now).await?;
        txn.commit().await.map_err(db_error)?;
        self.committed(last);
        Ok(())
    }

    /// One page of customers.
    pub async fn list_customers(&self, q: &CustomerQuery) -> Result<CustomerPage, ApiError> {
        let filter = match &q.filter {
            Some(f) => query::condition(f, &filter_column)?,
            None => Condition::all(),
        };
        let total_size = customer::Entity::find()
            .filter(filter.clone())
            .count(&self.db)
            .await
            .map_err(db_error)?;

        let order = q.order;
        let sort_col = order.field.column();
        let mut select = customer::Entity::find().filter(filter);
        if let Some(cursor) = &q.after {
            select = select.filter(keyset(order, cursor)?);
        }
        let direction = if order.descending {
            sea_orm::Order::Desc
        } else {
            sea_orm::Order::Asc
        };
        if order.field != OrderField::Id {
            select = select.order_by(sort_col, direction.clone());
        }
        let mut rows: Vec<Customer> = select
            .order_by(customer::Column::Id, direction)
            .limit(q.page_size + 1)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(from_model)
            .collect();
        let next = if rows.len() as u64 > q.page_size {
            rows.truncate(q.page_size as usize);
            rows.last().map(|c| Cursor {
                key: order.field.key_of(c),
                id: c.id.clone(),
            })
        } else {
            None
        };
        Ok(CustomerPage {
            customers: rows,
            next,
            total_size,
        })
    }

    /// Erases a customer's personal data: the record, free text in its
    /// events and interactions, and every earlier change-feed payload about
    /// it; appends the erasure event and an audit record. Erasing twice
    /// returns the first erasure.
    pub async fn erase_customer(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(Customer, i64), ApiError> {
        let txn = crate::begin_write(&self.db).await?;
        let current = customer::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await
            .map_err(db_error)?
            .map(from_model)
            .ok_or_else(|| ApiError::not_found("customer", id))?;
        if current.erase_time.is_some() {
            let audit = erasure::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await
                .map_err(db_error)?;
            return Ok((current, audit.map_or(0, |a| a.sequence)));
        }
        let f = current.fields;
        let erased = Customer {
            fields: CustomerFields {
                external_id: f.external_id,
                region: f.region,
                gender: f.gender,
                income_band: f.income_band,
                ..CustomerFields::default()
            },
            update_time: now,
            erase_time: Some(now),
            version: current.version + 1,
            ..current
        };
        customer::Entity::update(to_active(&erased))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        Self::scrub_activity(&txn, id).await?;

        // Earlier feed entries about this customer still hold personal data.
        let history = change::Entity::find()
            .filter(change::Column::CustomerId.eq(id))
            .all(&txn)
            .await
            .map_err(db_error)?;
        for row in history {
            txn.execute(
                Query::update()
                    .table("profile_changes")
                    .value("payload", self.codec.redact(&row.payload))
                    .and_where(Expr::col("sequence").eq(row.sequence)),
            )
            .await
            .map_err(db_error)?;
        }

        let change = NewChange {
            kind: ChangeKind::Erasure,
            customer_id: id.to_owned(),
            payload: self.codec.erasure(&erased),
        };
        let sequence = feed::append(&txn, vec![change], now).await?;
        erasure::Entity::insert(erasure::ActiveModel {
            customer_id: Set(id.to_owned()),
            erase_time: Set(now),
            reason: Set(reason.to_owned()),
            sequence: Set(sequence),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        self.committed(sequence);
        Ok((erased, sequence))
    }
}

/// Rows strictly after `cursor` in the given order (ties broken by id).
fn keyset(order: CustomerOrder, cursor: &Cursor) -> Result<Condition, ApiError> {
    let id = customer::Column::Id;
    let after_id = if order.descending {
        id.lt(cursor.id.clone())
    } else {
        id.gt(cursor.id.clone())
    };
    if order.field == OrderField::Id {
        return Ok(Condition::all().add(after_id));
    }
    let col = order.field.column();
    let key: sea_orm::Value = if order.field.is_time() {
        DateTime::parse_from_rfc3339(&cursor.key)
            .map_err(|_| ApiError::invalid_field("page_token", "is not a valid page token"))?
            .with_timezone(&Utc)
            .into()
    } else {
        cursor.key.clone().into()
    };
    let beyond = if order.descending {
        col.lt(key.clone())
    } else {
        col.gt(key.clone())
    };
    Ok(Condition::any()
        .add(beyond)
        .add(Condition::all().add(col.eq(key)).add(after_id)))
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
