//! The tonic trait impl: one line per RPC, delegating to the module that
//! owns it (segments, campaigns, cross_sell).

use std::time::Duration;

use patron_proto::campaign::{self as pb, campaign_service_server::CampaignService};
use patron_runtime::{ServiceContext, error::IntoGrpc, to_status};
use patron_store::campaign::CampaignStore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    campaigns::{self, AudienceStream},
    cross_sell::{self, AffinityCache},
    memory::MemoryView,
    segments::{self, TargetStream, WatchStream},
};

#[derive(Clone)]
pub struct CampaignApi {
    store: CampaignStore,
    memory: MemoryView,
    affinity: AffinityCache,
    watch_poll: Duration,
    shutdown: CancellationToken,
}

impl CampaignApi {
    pub(crate) fn new(ctx: &ServiceContext, memory: MemoryView) -> Self {
        Self {
            store: CampaignStore::new(&ctx.storage),
            memory,
            affinity: AffinityCache::default(),
            watch_poll: Duration::from_millis(ctx.settings.campaign.watch_interval_ms),
            shutdown: ctx.shutdown.clone(),
        }
    }
}

#[tonic::async_trait]
impl CampaignService for CampaignApi {
    #[tracing::instrument(skip_all)]
    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        segments::create(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        segments::get(&self.store, &request.into_inner().id)
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        segments::list(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        segments::update(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        segments::delete(&self.store, &request.into_inner().id)
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        segments::preview(&self.store, &self.memory, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn watch_segment(
        &self,
        request: Request<pb::WatchSegmentRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        segments::watch(
            self.store.clone(),
            request.into_inner(),
            self.watch_poll,
            self.shutdown.clone(),
        )
        .await
        .map(Response::new)
        .map_err(to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn get_segment_history(
        &self,
        request: Request<pb::GetSegmentHistoryRequest>,
    ) -> Result<Response<pb::SegmentHistory>, Status> {
        segments::history(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn stream_targets(
        &self,
        request: Request<pb::StreamTargetsRequest>,
    ) -> Result<Response<TargetStream>, Status> {
        segments::stream_targets(
            self.store.clone(),
            self.memory.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )
        .await
        .map(Response::new)
        .map_err(to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn suggest_cross_sell(
        &self,
        request: Request<pb::SuggestCrossSellRequest>,
    ) -> Result<Response<pb::SuggestCrossSellResponse>, Status> {
        cross_sell::suggest(
            &self.store,
            &self.memory,
            &self.affinity,
            request.into_inner(),
        )
        .await
        .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn create_campaign(
        &self,
        request: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        campaigns::create(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_campaign(
        &self,
        request: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        campaigns::get(&self.store, &request.into_inner().id)
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn list_campaigns(
        &self,
        request: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        campaigns::list(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn launch_campaign(
        &self,
        request: Request<pb::LaunchCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        campaigns::launch(&self.store, &self.memory, &request.into_inner().id)
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn complete_campaign(
        &self,
        request: Request<pb::CompleteCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        campaigns::complete(&self.store, &request.into_inner().id)
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn stream_campaign_audience(
        &self,
        request: Request<pb::StreamCampaignAudienceRequest>,
    ) -> Result<Response<AudienceStream>, Status> {
        campaigns::stream_audience(
            self.store.clone(),
            self.memory.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )
        .await
        .map(Response::new)
        .map_err(to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn record_responses(
        &self,
        request: Request<pb::RecordResponsesRequest>,
    ) -> Result<Response<pb::RecordResponsesResponse>, Status> {
        campaigns::record_responses(&self.store, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_campaign_report(
        &self,
        request: Request<pb::GetCampaignReportRequest>,
    ) -> Result<Response<pb::CampaignReport>, Status> {
        campaigns::report(&self.store, request.into_inner())
            .await
            .into_grpc()
    }
}
