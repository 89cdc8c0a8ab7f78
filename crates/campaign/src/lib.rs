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
mod memory;
mod segments;
mod view;
mod watcher;

use memory::MemoryView;
use patron_proto::campaign::campaign_service_server::CampaignServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use patron_store::campaign::CampaignStore;
use tonic::service::RoutesBuilder;

pub use grpc::CampaignApi;

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
        on_ready: Some(view::start),
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    // One in-memory mirror of the view per process, shared by the RPCs and
    // the segment watcher; both start once storage is ready.
    let memory = MemoryView::new(
        CampaignStore::new(&ctx.storage),
        ctx.settings.campaign.in_memory_view,
    );
    let background = (ctx.clone(), memory.clone());
    tokio::spawn(async move {
        let (ctx, memory) = background;
        tokio::select! {
            () = ctx.storage_ready() => {
                memory.start(
                    std::time::Duration::from_millis(ctx.settings.campaign.watch_interval_ms),
                    ctx.shutdown.clone(),
                );
                watcher::start(&ctx, memory);
            }
            () = ctx.shutdown.cancelled() => {}
        }
    });
    routes.add_service(patron_runtime::with_codec_settings!(
        ctx,
        CampaignServiceServer::new(CampaignApi::new(ctx, memory))
    ));
}
