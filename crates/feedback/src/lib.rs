//! `patron.feedback.v1.FeedbackService`: NPS and CSAT surveys, complaints and their lifecycle, satisfaction reports.
//!
//! The service is registered and healthy; its RPCs are built by the issue
//! that owns this capability and answer UNIMPLEMENTED until then.

use patron_proto::feedback::feedback_service_server::{FeedbackService, FeedbackServiceServer};
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Feedback,
        depends_on: &[ServiceKind::Profile],
        register,
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    let limit = ctx.max_message_bytes();
    routes.add_service(
        FeedbackServiceServer::new(FeedbackApi::new(ctx))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    );
}

#[derive(Clone)]
pub struct FeedbackApi {
    _ctx: ServiceContext,
}

impl FeedbackApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self { _ctx: ctx.clone() }
    }
}

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {}
