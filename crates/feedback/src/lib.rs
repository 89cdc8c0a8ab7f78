//! `patron.feedback.v1.FeedbackService`: NPS and CSAT surveys, complaints and
//! their lifecycle, satisfaction reports, and per-customer summaries.
//! Erasures reach it through the profile change feed.

mod consumer;
mod convert;
mod grpc;
mod reports;
mod service;

use patron_proto::feedback::feedback_service_server::FeedbackServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

pub use service::FeedbackApi;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Feedback,
        depends_on: &[ServiceKind::Profile],
        register,
        on_ready: Some(consumer::start),
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
