//! `patron.scoring.v1.ScoringService`: the read model fed by the profile
//! change feed, the fitted purchase models (BG/NBD + Gamma-Gamma), and (to
//! come, see the open issue) scores, the hot-score cache and reports.

mod consumer;
mod grpc;
mod models;
mod reports;
mod scores;

use patron_proto::scoring::scoring_service_server::ScoringServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

pub use grpc::ScoringApi;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Scoring,
        depends_on: &[ServiceKind::Profile, ServiceKind::Feedback],
        register,
        on_ready: Some(consumer::start),
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
