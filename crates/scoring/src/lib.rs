//! `patron.scoring.v1.ScoringService`: the read model fed by the profile
//! change feed, the fitted purchase models (BG/NBD + Gamma-Gamma), full and
//! online scoring, the hot-score cache and the reports.

mod consumer;
mod encode;
mod grpc;
mod models;
mod prefetch;
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
    routes.add_service(patron_runtime::with_codec_settings!(
        ctx,
        ScoringServiceServer::new(ScoringApi::new(ctx))
    ));
}
