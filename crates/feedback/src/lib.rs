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
    routes.add_service(patron_runtime::with_codec_settings!(
        ctx,
        FeedbackServiceServer::new(FeedbackApi::new(ctx))
    ));
}
