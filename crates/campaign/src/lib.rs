//! `patron.campaign.v1.CampaignService`: segments written in the segment
//! language, streamed target lists, live segment membership, campaigns with
//! control groups, responses and uplift, cross-sell suggestions.
//!
//! Campaign keeps its own view of customers (see `view`): attributes,
//! consent and purchases from the profile change feed, scores from scoring's
//! score stream. Rules run against that view; the segment watcher turns
//! its changes into membership changes.

mod campaigns;
mod cross_sell;
mod grpc;
mod segments;
mod view;
mod watcher;

use patron_proto::campaign::campaign_service_server::CampaignServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

pub use grpc::CampaignApi;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Campaign,
        depends_on: &[ServiceKind::Profile, ServiceKind::Scoring],
        register,
        on_ready: Some(start),
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

fn start(ctx: &ServiceContext) {
    view::start(ctx);
    watcher::start(ctx);
}
