//! The tonic trait impl: each RPC hands its request to `service.rs` or
//! `reports.rs` and maps the result in one place.

use patron_proto::feedback::{self as pb, feedback_service_server::FeedbackService};
use patron_runtime::error::IntoGrpc;
use tonic::{Request, Response, Status};

use crate::{reports, service::FeedbackApi};

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {
    #[tracing::instrument(skip_all)]
    async fn submit_survey_responses(
        &self,
        r: Request<pb::SubmitSurveyResponsesRequest>,
    ) -> Reply<pb::SubmitSurveyResponsesResponse> {
        self.submit(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn file_complaint(&self, r: Request<pb::FileComplaintRequest>) -> Reply<pb::Complaint> {
        self.file(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_complaint(&self, r: Request<pb::GetComplaintRequest>) -> Reply<pb::Complaint> {
        self.get(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn update_complaint(
        &self,
        r: Request<pb::UpdateComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        self.update(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn list_complaints(
        &self,
        r: Request<pb::ListComplaintsRequest>,
    ) -> Reply<pb::ListComplaintsResponse> {
        self.list(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_nps_report(&self, r: Request<pb::GetNpsReportRequest>) -> Reply<pb::NpsReport> {
        reports::nps(&self.store, r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_csat_report(&self, r: Request<pb::GetCsatReportRequest>) -> Reply<pb::CsatReport> {
        reports::csat(&self.store, r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_nps_trend(&self, r: Request<pb::GetNpsTrendRequest>) -> Reply<pb::NpsTrend> {
        reports::nps_trend(&self.store, r.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_complaint_report(
        &self,
        r: Request<pb::GetComplaintReportRequest>,
    ) -> Reply<pb::ComplaintReport> {
        self.complaint_report(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_product_opinion_summary(
        &self,
        r: Request<pb::GetProductOpinionSummaryRequest>,
    ) -> Reply<pb::ProductOpinionSummary> {
        reports::product_opinions(&self.store, r.into_inner())
            .await
            .into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn get_customer_feedback_summary(
        &self,
        r: Request<pb::GetCustomerFeedbackSummaryRequest>,
    ) -> Reply<pb::CustomerFeedbackSummary> {
        self.customer_summary(r.into_inner()).await.into_grpc()
    }

    #[tracing::instrument(skip_all)]
    async fn stream_customer_summaries(
        &self,
        r: Request<pb::StreamCustomerSummariesRequest>,
    ) -> Reply<crate::service::SummaryStream> {
        self.stream_summaries(r.into_inner())
            .map(Response::new)
            .map_err(patron_runtime::to_status)
    }
}
