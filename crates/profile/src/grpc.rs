//! The tonic trait impl: each RPC hands its request to the logic in
//! `service.rs` and maps the result to a status in one place.

use patron_proto::profile::{self as pb, customer_profile_service_server::CustomerProfileService};
use patron_runtime::{error::IntoGrpc, to_status};
use tonic::{Request, Response, Status};

use crate::{feed::ChangeStream, service::ProfileApi};

#[tonic::async_trait]
impl CustomerProfileService for ProfileApi {
    #[tracing::instrument(skip_all)]
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        self.create_customer(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_customers(
        &self,
        request: Request<pb::UpsertCustomersRequest>,
    ) -> Result<Response<pb::UpsertCustomersResponse>, Status> {
        self.upsert_customers(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        self.get_customer(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn batch_get_customers(
        &self,
        request: Request<pb::BatchGetCustomersRequest>,
    ) -> Result<Response<pb::BatchGetCustomersResponse>, Status> {
        self.batch_get_customers(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        self.update_customer(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        self.list_customers(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn record_transactions(
        &self,
        request: Request<pb::RecordTransactionsRequest>,
    ) -> Result<Response<pb::RecordTransactionsResponse>, Status> {
        self.record_transactions(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        self.list_transactions(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        self.record_events(request.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn record_interactions(
        &self,
        request: Request<pb::RecordInteractionsRequest>,
    ) -> Result<Response<pb::RecordInteractionsResponse>, Status> {
        self.record_interactions(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn stream_changes(
        &self,
        request: Request<pb::StreamChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        self.stream_changes(request.into_inner())
            .map(Response::new)
            .map_err(to_status)
    }

    #[tracing::instrument(skip_all)]
    async fn export_customer_data(
        &self,
        request: Request<pb::ExportCustomerDataRequest>,
    ) -> Result<Response<pb::ExportCustomerDataResponse>, Status> {
        self.export_customer_data(request.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        self.erase_customer(request.into_inner()).await.into_grpc()
    }
}
