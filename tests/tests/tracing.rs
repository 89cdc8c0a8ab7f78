//! Span export over OTLP, checked with a real OTLP/gRPC collector endpoint
//! served by the test: a caller's W3C `traceparent` becomes the parent of
//! the server's span, and a call the service makes to a peer while handling
//! it is exported as that span's child, in the same trace.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use patron_runtime::config::{LogFormat, LogSettings, TracingSettings};
use patron_tests::{
    Backend, TestApp,
    pb::{feedback as fb, profile as profile_pb},
};
use tonic::Request;

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<(Span, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (s, service.clone())));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_linked_across_services() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let telemetry = patron_runtime::telemetry::init(
        &LogSettings {
            format: LogFormat::Json,
            filter: "warn,patron_runtime=info".into(),
        },
        &TracingSettings {
            otlp_endpoint: Some(endpoint),
            service_name: Some("patron-under-test".into()),
            sample_ratio: 1.0,
        },
        "patron",
    )
    .expect("telemetry");

    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let customer = app
        .profile()
        .create_customer(profile_pb::CreateCustomerRequest {
            customer: Some(profile_pb::Customer {
                external_id: "traced".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    // The caller's context: trace 4bf9..., its span 00f0....
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let mut request = Request::new(fb::FileComplaintRequest {
        complaint: Some(fb::Complaint {
            customer_id: customer.id,
            r#type: "delivery".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    app.feedback()
        .file_complaint(request)
        .await
        .expect("file a complaint (feedback checks the customer with profile)");

    // Spans end when their responses are sent; flush until both are in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (file, check) = loop {
        telemetry.flush().await;
        let spans = collector.spans.lock().unwrap().clone();
        let in_trace: Vec<_> = spans
            .iter()
            .filter(|(s, _)| hex(&s.trace_id) == TRACE)
            .collect();
        let find = |method: &str| {
            in_trace
                .iter()
                .find(|(s, _)| attribute(s, "method").as_deref() == Some(method))
                .cloned()
                .cloned()
        };
        if let (Some(file), Some(check)) = (
            find("/patron.feedback.v1.FeedbackService/FileComplaint"),
            find("/patron.profile.v1.CustomerProfileService/BatchGetCustomers"),
        ) {
            break (file, check);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of trace {TRACE} never arrived; got {:?}",
            spans
                .iter()
                .map(|(s, _)| (hex(&s.trace_id), attribute(s, "method")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(file.0.name, "grpc");
    assert_eq!(file.1, "patron-under-test", "service.name resource");
    assert_eq!(
        hex(&file.0.parent_span_id),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(
        hex(&check.0.parent_span_id),
        hex(&file.0.span_id),
        "the peer call is a child of the call that made it"
    );
    drop(app);
    telemetry.shutdown().await;
}
