//! The tonic trait impl. FitModel and GetModel are built; the scores, the
//! hot-score cache and the reports answer UNIMPLEMENTED until their issue
//! lands (generated default stubs).

use patron_proto::scoring::{self as pb, scoring_service_server::ScoringService};
use patron_runtime::{ServiceContext, error::IntoGrpc};
use patron_store::scoring::ScoringStore;
use tonic::{Request, Response, Status};

use crate::models;

#[derive(Clone)]
pub struct ScoringApi {
    store: ScoringStore,
}

impl ScoringApi {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            store: ScoringStore::new(&ctx.storage),
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
        models::fit(&self.store, request.into_inner())
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
