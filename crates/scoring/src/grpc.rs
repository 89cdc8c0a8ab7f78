//! The tonic trait impl: every RPC of ScoringService, delegating to models,
//! scores and reports.

use patron_proto::scoring::{self as pb, scoring_service_server::ScoringService};
use patron_runtime::{ServiceContext, error::IntoGrpc, population::PopulationGate};
use patron_store::scoring::ScoringStore;
use tonic::{Request, Response, Status};

use crate::{models, reports, scores};

#[derive(Clone)]
pub struct ScoringApi {
    store: ScoringStore,
    cache: patron_cache::Cache,
    lookups: scores::Lookups,
    population: PopulationGate,
}

impl ScoringApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: ScoringStore::new(&ctx.storage),
            cache: ctx.cache.clone(),
            lookups: scores::Lookups::default(),
            population: PopulationGate::new(
                ctx.settings.limits.population_calls,
                ctx.metrics.clone(),
            ),
        }
    }
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    #[tracing::instrument(skip_all)]
    async fn fit_model(
        &self,
        request: Request<pb::FitModelRequest>,
    ) -> Result<Response<pb::ModelFit>, Status> {
        models::fit(&self.store, &self.population, request.into_inner())
            .await
            .into_grpc()
    }

    // The hot paths carry no span of their own: the call guard's span
    // already names the method, and a second one costs per call.
    async fn get_score(
        &self,
        request: Request<pb::GetScoreRequest>,
    ) -> Result<Response<pb::ScoreReply>, Status> {
        scores::get(
            &self.store,
            &self.cache,
            &self.lookups,
            request.into_inner(),
        )
        .await
        .into_grpc()
    }

    async fn batch_get_scores(
        &self,
        request: Request<pb::BatchGetScoresRequest>,
    ) -> Result<Response<pb::BatchGetScoresResponse>, Status> {
        scores::batch_get(
            &self.store,
            &self.cache,
            &self.lookups,
            request.into_inner(),
        )
        .await
        .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn recompute_scores(
        &self,
        request: Request<pb::RecomputeScoresRequest>,
    ) -> Result<Response<scores::ProgressStream>, Status> {
        scores::recompute(
            self.store.clone(),
            self.cache.clone(),
            self.population.clone(),
            request.into_inner(),
        )
        .map(Response::new)
        .map_err(patron_runtime::to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn stream_scores(
        &self,
        request: Request<pb::StreamScoresRequest>,
    ) -> Result<Response<scores::ScoreStream>, Status> {
        scores::stream(self.store.clone(), request.into_inner())
            .map(Response::new)
            .map_err(patron_runtime::to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn get_score_distribution(
        &self,
        _request: Request<pb::GetScoreDistributionRequest>,
    ) -> Result<Response<pb::ScoreDistribution>, Status> {
        scores::distribution(&self.store).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_cohort_retention_report(
        &self,
        request: Request<pb::GetCohortRetentionReportRequest>,
    ) -> Result<Response<pb::CohortRetentionReport>, Status> {
        reports::cohorts(&self.store, &self.population, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_churn_rate_report(
        &self,
        request: Request<pb::GetChurnRateReportRequest>,
    ) -> Result<Response<pb::ChurnRateReport>, Status> {
        reports::churn(&self.store, &self.population, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_product_distribution_report(
        &self,
        request: Request<pb::GetProductDistributionReportRequest>,
    ) -> Result<Response<pb::ProductDistributionReport>, Status> {
        reports::products(&self.store, &self.population, request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_model(
        &self,
        _request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelFit>, Status> {
        models::latest(&self.store).await.into_grpc()
    }
}
