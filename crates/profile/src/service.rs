//! The profile service's logic: validate, convert, call the store.

use std::{collections::HashSet, sync::Arc};

use patron_domain::{ApiError, Violations, activity::check_id, customer::parse_etag, filter};
use patron_proto::profile as pb;
use patron_runtime::{
    ServiceContext,
    convert::{now, to_timestamp, today},
    error::ApiResult,
};
use patron_store::{
    paging,
    profile::{
        CustomerOrder, CustomerQuery, OrderField, ProfileStore, UpsertOutcome,
        customer_filter_fields,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    convert::{
        customer_fields, customer_to_proto, event, event_to_proto, interaction,
        interaction_to_proto, raw_customer_fields, transaction, transaction_to_proto,
    },
    feed::{self, ChangeStream, ProtoFeedCodec},
    mask,
};

const MAX_REQUEST_ID_LEN: usize = 128;
/// Customers per UpsertCustomers / BatchGetCustomers call.
const MAX_CUSTOMERS_PER_CALL: usize = 1_000;
/// Records per RecordTransactions / RecordEvents / RecordInteractions call.
const MAX_RECORDS_PER_CALL: usize = 10_000;
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 1_000;

#[derive(Clone)]
pub struct ProfileApi {
    store: ProfileStore,
    shutdown: CancellationToken,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn required_id<'a>(id: &'a str, field: &str) -> ApiResult<&'a str> {
    let mut v = Violations::new();
    check_id(&mut v, field, id);
    v.finish().map(|()| id)
}

fn too_many(field: &str, max: usize) -> ApiError {
    ApiError::invalid_field(field, format!("at most {max} per call"))
}

impl ProfileApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: ProfileStore::new(&ctx.storage, Arc::new(ProtoFeedCodec)),
            shutdown: ctx.shutdown.clone(),
        }
    }

    pub(crate) async fn create_customer(
        &self,
        req: pb::CreateCustomerRequest,
    ) -> ApiResult<pb::Customer> {
        let customer = req
            .customer
            .ok_or_else(|| ApiError::invalid_field("customer", "is required"))?;
        let fields = customer_fields(&customer, today()).map_err(|e| e.within("customer"))?;
        let request_key = match req.request_id.trim() {
            "" => None,
            id if id.len() > MAX_REQUEST_ID_LEN => {
                return Err(ApiError::invalid_field(
                    "request_id",
                    format!("must be at most {MAX_REQUEST_ID_LEN} bytes"),
                ));
            }
            id => Some(format!("create_customer:{id}")),
        };
        let created = self
            .store
            .create_customer(new_id(), fields, request_key, now())
            .await?;
        Ok(customer_to_proto(&created))
    }

    pub(crate) async fn upsert_customers(
        &self,
        req: pb::UpsertCustomersRequest,
    ) -> ApiResult<pb::UpsertCustomersResponse> {
        if req.customers.len() > MAX_CUSTOMERS_PER_CALL {
            return Err(too_many("customers", MAX_CUSTOMERS_PER_CALL));
        }
        let today = today();
        let mut v = Violations::new();
        let mut seen = HashSet::new();
        let mut batch = Vec::with_capacity(req.customers.len());
        for (i, c) in req.customers.iter().enumerate() {
            let prefix = format!("customers[{i}]");
            if let Some(fields) = v.check(&prefix, customer_fields(c, today)) {
                if !seen.insert(fields.external_id.clone()) {
                    v.add(
                        format!("{prefix}.external_id"),
                        "appears twice in this batch",
                    );
                }
                batch.push(fields);
            }
        }
        v.finish()?;
        let results = self.store.upsert_customers(batch, new_id, now()).await?;
        let mut response = pb::UpsertCustomersResponse::default();
        for (customer, outcome) in results {
            match outcome {
                UpsertOutcome::Created => response.created += 1,
                UpsertOutcome::Updated => response.updated += 1,
                UpsertOutcome::Unchanged => response.unchanged += 1,
            }
            response.customers.push(customer_to_proto(&customer));
        }
        Ok(response)
    }

    pub(crate) async fn get_customer(
        &self,
        req: pb::GetCustomerRequest,
    ) -> ApiResult<pb::Customer> {
        let id = required_id(&req.id, "id")?;
        Ok(customer_to_proto(&self.store.get_customer(id).await?))
    }

    pub(crate) async fn batch_get_customers(
        &self,
        req: pb::BatchGetCustomersRequest,
    ) -> ApiResult<pb::BatchGetCustomersResponse> {
        if req.ids.len() > MAX_CUSTOMERS_PER_CALL {
            return Err(too_many("ids", MAX_CUSTOMERS_PER_CALL));
        }
        let mut v = Violations::new();
        for (i, id) in req.ids.iter().enumerate() {
            check_id(&mut v, &format!("ids[{i}]"), id);
        }
        v.finish()?;
        let found = self.store.get_customers(&req.ids).await?;
        let mut response = pb::BatchGetCustomersResponse::default();
        for id in req.ids {
            match found.get(&id) {
                Some(c) => response.customers.push(customer_to_proto(c)),
                None => response.missing_ids.push(id),
            }
        }
        Ok(response)
    }

    pub(crate) async fn update_customer(
        &self,
        req: pb::UpdateCustomerRequest,
    ) -> ApiResult<pb::Customer> {
        let incoming = req
            .customer
            .ok_or_else(|| ApiError::invalid_field("customer", "is required"))?;
        let id = required_id(&incoming.id, "customer.id")?.to_owned();
        let expected = match incoming.etag.trim() {
            "" => None,
            etag => Some(parse_etag(etag).ok_or_else(|| {
                ApiError::invalid_field("customer.etag", "is not an etag of this API")
            })?),
        };
        let raw = raw_customer_fields(&incoming).map_err(|e| e.within("customer"))?;
        let paths = match req.update_mask.map(|m| m.paths) {
            Some(paths) if !paths.is_empty() => paths,
            _ => mask::implied(&incoming),
        };
        let current = self.store.get_customer(&id).await?;
        if current.erase_time.is_some() {
            return Err(ApiError::failed_precondition(
                "CUSTOMER_ERASED",
                "the customer was erased",
            ));
        }
        let expected = expected.unwrap_or(current.version);
        if expected != current.version {
            return Err(ApiError::aborted(
                "ETAG_MISMATCH",
                format!("the customer changed since etag {expected}; read it again"),
            ));
        }
        let merged = mask::apply(&current.fields, &raw, &paths)?
            .validate(today())
            .map_err(|e| e.within("customer"))?;
        if merged == current.fields {
            return Ok(customer_to_proto(&current));
        }
        let now = now();
        let updated = patron_domain::customer::Customer {
            fields: merged,
            update_time: now,
            version: current.version + 1,
            ..current
        };
        self.store.update_customer(&updated, expected, now).await?;
        Ok(customer_to_proto(&updated))
    }

    pub(crate) async fn list_customers(
        &self,
        req: pb::ListCustomersRequest,
    ) -> ApiResult<pb::ListCustomersResponse> {
        let page_size = paging::page_size(req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let filter = filter::parse(&req.filter, customer_filter_fields())?;
        let order = parse_order_by(&req.order_by)?;
        let fingerprint =
            paging::fingerprint(&["customers", req.filter.trim(), req.order_by.trim()]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        let page = self
            .store
            .list_customers(&CustomerQuery {
                filter,
                order,
                page_size,
                after,
            })
            .await?;
        Ok(pb::ListCustomersResponse {
            customers: page.customers.iter().map(customer_to_proto).collect(),
            next_page_token: page
                .next
                .map(|c| paging::encode(c, fingerprint))
                .unwrap_or_default(),
            total_size: page.total_size as i64,
        })
    }

    pub(crate) async fn record_transactions(
        &self,
        req: pb::RecordTransactionsRequest,
    ) -> ApiResult<pb::RecordTransactionsResponse> {
        if req.transactions.len() > MAX_RECORDS_PER_CALL {
            return Err(too_many("transactions", MAX_RECORDS_PER_CALL));
        }
        let now = now();
        let mut v = Violations::new();
        let batch: Vec<_> = req
            .transactions
            .iter()
            .enumerate()
            .filter_map(|(i, t)| v.check(&format!("transactions[{i}]"), transaction(t, now)))
            .collect();
        v.finish()?;
        let outcome = self.store.record_transactions(batch, now).await?;
        Ok(pb::RecordTransactionsResponse {
            accepted: outcome.accepted as i32,
            duplicates: outcome.duplicates as i32,
        })
    }

    pub(crate) async fn list_transactions(
        &self,
        req: pb::ListTransactionsRequest,
    ) -> ApiResult<pb::ListTransactionsResponse> {
        let customer_id = required_id(&req.customer_id, "customer_id")?;
        let page_size = paging::page_size(req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let fingerprint = paging::fingerprint(&["transactions", customer_id]);
        let after = paging::decode(&req.page_token, fingerprint)?;
        // NOT_FOUND for an unknown customer rather than an empty list.
        self.store.get_customer(customer_id).await?;
        let mut rows = self
            .store
            .list_transactions(customer_id, page_size + 1, after.as_ref())
            .await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|t| paging::Cursor {
                key: t
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                id: t.id.clone(),
            })
        } else {
            None
        };
        Ok(pb::ListTransactionsResponse {
            transactions: rows.iter().map(transaction_to_proto).collect(),
            next_page_token: next
                .map(|c| paging::encode(c, fingerprint))
                .unwrap_or_default(),
        })
    }

    pub(crate) async fn record_events(
        &self,
        req: pb::RecordEventsRequest,
    ) -> ApiResult<pb::RecordEventsResponse> {
        if req.events.len() > MAX_RECORDS_PER_CALL {
            return Err(too_many("events", MAX_RECORDS_PER_CALL));
        }
        let now = now();
        let mut v = Violations::new();
        let batch: Vec<_> = req
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| v.check(&format!("events[{i}]"), event(e, now)))
            .collect();
        v.finish()?;
        let outcome = self.store.record_events(batch, now).await?;
        Ok(pb::RecordEventsResponse {
            accepted: outcome.accepted as i32,
            duplicates: outcome.duplicates as i32,
        })
    }

    pub(crate) async fn record_interactions(
        &self,
        req: pb::RecordInteractionsRequest,
    ) -> ApiResult<pb::RecordInteractionsResponse> {
        if req.interactions.len() > MAX_RECORDS_PER_CALL {
            return Err(too_many("interactions", MAX_RECORDS_PER_CALL));
        }
        let now = now();
        let mut v = Violations::new();
        let batch: Vec<_> = req
            .interactions
            .iter()
            .enumerate()
            .filter_map(|(i, x)| v.check(&format!("interactions[{i}]"), interaction(x, now)))
            .collect();
        v.finish()?;
        let outcome = self.store.record_interactions(batch, now).await?;
        Ok(pb::RecordInteractionsResponse {
            accepted: outcome.accepted as i32,
            duplicates: outcome.duplicates as i32,
        })
    }

    pub(crate) fn stream_changes(&self, req: pb::StreamChangesRequest) -> ApiResult<ChangeStream> {
        if req.after_sequence < 0 {
            return Err(ApiError::invalid_field(
                "after_sequence",
                "must not be negative",
            ));
        }
        let batch = match req.max_batch_size {
            n if n < 0 => {
                return Err(ApiError::invalid_field(
                    "max_batch_size",
                    "must not be negative",
                ));
            }
            0 => feed::MAX_BATCH,
            n => (n as u64).min(feed::MAX_BATCH),
        };
        Ok(feed::stream(
            self.store.clone(),
            req.after_sequence,
            batch,
            self.shutdown.clone(),
        ))
    }

    pub(crate) async fn export_customer_data(
        &self,
        req: pb::ExportCustomerDataRequest,
    ) -> ApiResult<pb::ExportCustomerDataResponse> {
        let id = required_id(&req.id, "id")?;
        let customer = self.store.get_customer(id).await?;
        let (transactions, events, interactions) = self.store.activity_of(id).await?;
        Ok(pb::ExportCustomerDataResponse {
            customer: Some(customer_to_proto(&customer)),
            transactions: transactions.iter().map(transaction_to_proto).collect(),
            events: events.iter().map(event_to_proto).collect(),
            interactions: interactions.iter().map(interaction_to_proto).collect(),
            export_time: Some(to_timestamp(now())),
        })
    }

    pub(crate) async fn erase_customer(
        &self,
        req: pb::EraseCustomerRequest,
    ) -> ApiResult<pb::EraseCustomerResponse> {
        let id = required_id(&req.id, "id")?;
        if req.reason.len() > 200 || req.reason.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "reason",
                "must be at most 200 printable bytes",
            ));
        }
        let (erased, sequence) = self
            .store
            .erase_customer(id, req.reason.trim(), now())
            .await?;
        Ok(pb::EraseCustomerResponse {
            customer_id: erased.id,
            erase_time: erased.erase_time.map(to_timestamp),
            sequence,
        })
    }
}

/// `order_by`: one field, optionally followed by `asc` or `desc`.
fn parse_order_by(order_by: &str) -> ApiResult<CustomerOrder> {
    let parts: Vec<&str> = order_by.split_whitespace().collect();
    let invalid = || {
        let fields: Vec<_> = OrderField::ALL.iter().map(|(n, _)| *n).collect();
        ApiError::invalid_field(
            "order_by",
            format!(
                "must be one of {} optionally followed by asc or desc",
                fields.join(", ")
            ),
        )
    };
    let (name, descending) = match parts.as_slice() {
        [] => return Ok(CustomerOrder::default()),
        [name] => (*name, false),
        [name, dir] if dir.eq_ignore_ascii_case("asc") => (*name, false),
        [name, dir] if dir.eq_ignore_ascii_case("desc") => (*name, true),
        _ => return Err(invalid()),
    };
    let field = OrderField::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(invalid)?;
    Ok(CustomerOrder { field, descending })
}
