//! The tonic service: request validation, conversion, and calls into the store.

use std::sync::Arc;

use patron_domain::{ApiError, customer::Customer};
use patron_proto::profile::{self as pb, customer_profile_service_server::CustomerProfileService};
use patron_runtime::{
    ServiceContext,
    convert::{now, today},
    error::{ApiResult, IntoGrpc},
};
use patron_store::profile::{FeedCodec, ProfileStore};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::convert::{customer_fields, customer_to_proto};

/// Longest accepted `request_id`.
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Clone)]
pub struct ProfileApi {
    store: ProfileStore,
}

/// Feed payloads are the encoded `ChangeEvent` without sequence and commit
/// time, which the stream fills in from the outbox row.
struct ProtoFeedCodec;

impl FeedCodec for ProtoFeedCodec {
    fn customer(&self, customer: &Customer) -> Vec<u8> {
        pb::ChangeEvent {
            change: Some(pb::change_event::Change::Customer(customer_to_proto(
                customer,
            ))),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

impl ProfileApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: ProfileStore::new(&ctx.storage, Arc::new(ProtoFeedCodec)),
        }
    }

    async fn create_customer(&self, req: pb::CreateCustomerRequest) -> ApiResult<pb::Customer> {
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
        let id = uuid::Uuid::now_v7().to_string();
        let created = self
            .store
            .create_customer(id, fields, request_key, now())
            .await?;
        Ok(customer_to_proto(&created))
    }

    async fn get_customer(&self, req: pb::GetCustomerRequest) -> ApiResult<pb::Customer> {
        let id = required_id(&req.id, "id")?;
        Ok(customer_to_proto(&self.store.get_customer(id).await?))
    }
}

fn required_id<'a>(id: &'a str, field: &str) -> ApiResult<&'a str> {
    let id = id.trim();
    if id.is_empty() {
        Err(ApiError::invalid_field(field, "is required"))
    } else if id.len() > 128 {
        Err(ApiError::invalid_field(field, "must be at most 128 bytes"))
    } else {
        Ok(id)
    }
}

#[tonic::async_trait]
impl CustomerProfileService for ProfileApi {
    #[tracing::instrument(skip_all)]
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        self.create_customer(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        self.get_customer(request.into_inner()).await.into_grpc()
    }
}
