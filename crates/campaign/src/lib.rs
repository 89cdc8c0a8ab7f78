//! `patron.campaign.v1.CampaignService`: segments in the expression language, streamed target lists, campaigns with control groups and uplift.
//!
//! The service is registered and healthy; its RPCs are built by the issue
//! that owns this capability and answer UNIMPLEMENTED until then.

use patron_proto::campaign::campaign_service_server::{CampaignService, CampaignServiceServer};
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Campaign,
        depends_on: &[
            ServiceKind::Profile,
            ServiceKind::Scoring,
            ServiceKind::Feedback,
        ],
        register,
        on_ready: None,
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    let limit = ctx.max_message_bytes();
    routes.add_service(
        CampaignServiceServer::new(CampaignApi::new(ctx))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    );
}

#[derive(Clone)]
pub struct CampaignApi {
    _ctx: ServiceContext,
}

impl CampaignApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self { _ctx: ctx.clone() }
    }
}

#[tonic::async_trait]
impl CampaignService for CampaignApi {}
