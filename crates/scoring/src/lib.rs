//! `patron.scoring.v1.ScoringService`: RFM, CLV, churn and value scores, the fitted purchase models, and analytics reports.
//!
//! The service is registered and healthy; its RPCs are built by the issue
//! that owns this capability and answer UNIMPLEMENTED until then.

use patron_proto::scoring::scoring_service_server::{ScoringService, ScoringServiceServer};
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Scoring,
        depends_on: &[ServiceKind::Profile, ServiceKind::Feedback],
        register,
        on_ready: None,
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    let limit = ctx.max_message_bytes();
    routes.add_service(
        ScoringServiceServer::new(ScoringApi::new(ctx))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    );
}

#[derive(Clone)]
pub struct ScoringApi {
    _ctx: ServiceContext,
}

impl ScoringApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self { _ctx: ctx.clone() }
    }
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {}
