//! The foundation: every service up and healthy on each backend, reflection,
//! a customer round trip, start-up failures and shutdown.

use std::time::Duration;

use patron_runtime::{Application, ServiceKind};
use patron_store::DatabaseSettings;
use patron_tests::{
    all_modules, backend_tests, pb::profile as profile_pb, test_settings, violated_fields,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

backend_tests! {
    async fn every_service_reports_serving(app: TestApp) {
        let mut health = app.health();
        for kind in ServiceKind::ALL {
            let status = health
                .check(HealthCheckRequest { service: kind.grpc_name().into() })
                .await
                .expect("health check")
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{}", kind.grpc_name());
        }
        let unknown = health
            .check(HealthCheckRequest { service: "patron.nope.v1.Nope".into() })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
    }

    async fn reflection_lists_every_service(app: TestApp) {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.message().await.expect("message").expect("one response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for kind in ServiceKind::ALL {
            assert!(names.contains(&kind.grpc_name().to_owned()), "{names:?}");
        }
        assert!(names.contains(&"grpc.health.v1.Health".to_owned()));
    }

    async fn create_and_get_a_customer(app: TestApp) {
        let mut profile = app.profile();
        let created = profile
            .create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer {
                    external_id: "crm-42".into(),
                    display_name: "Ada Lovelace".into(),
                    email: "Ada@Example.com".into(),
                    phone: "+44 20 7946 0958".into(),
                    region: "East".into(),
                    tags: vec!["vip".into()],
                    ..Default::default()
                }),
                request_id: "req-1".into(),
            })
            .await
            .expect("create")
            .into_inner();
        assert!(!created.id.is_empty());
        assert_eq!(created.email, "ada@example.com");
        assert_eq!(created.phone, "+442079460958");
        assert!(created.create_time.is_some());

        let fetched = profile
            .get_customer(profile_pb::GetCustomerRequest { id: created.id.clone() })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(fetched, created);

        // A retry of the same request returns the first result.
        let retried = profile
            .create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer { external_id: "crm-42".into(), ..Default::default() }),
                request_id: "req-1".into(),
            })
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(retried.id, created.id);

        // The same external id from a different request is a conflict.
        let conflict = profile
            .create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer { external_id: "crm-42".into(), ..Default::default() }),
                request_id: "req-2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(conflict.code(), Code::AlreadyExists);

        let missing = profile
            .get_customer(profile_pb::GetCustomerRequest { id: "no-such-id".into() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);

        let invalid = profile
            .create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer { email: "nope".into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let mut fields = violated_fields(&invalid);
        fields.sort();
        assert_eq!(fields, ["customer.email", "customer.external_id"]);

        let no_customer = profile
            .create_customer(profile_pb::CreateCustomerRequest::default())
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&no_customer), ["customer"]);
    }

    async fn shutdown_stops_serving_and_exits_cleanly(app: TestApp) {
        let channel = app.channel.clone();
        tokio::time::timeout(Duration::from_secs(10), app.stop())
            .await
            .expect("stopped within the grace period")
            .expect("clean exit");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let after = health
            .check(HealthCheckRequest { service: ServiceKind::Profile.grpc_name().into() })
            .await;
        assert!(after.is_err(), "server still answering after shutdown: {after:?}");
    }
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_a_clear_error() {
    let settings = test_settings(DatabaseSettings::with_url(
        "sqlite:///no/such/dir/patron.db",
    ));
    let err = Application::build(settings, &all_modules())
        .await
        .err()
        .expect("must fail");
    let message = err.to_string();
    assert!(
        message.contains("/no/such/dir") && message.contains("does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_and_health_waits() {
    // Port 1 on loopback: nothing listens there, connections are refused.
    let mut settings = test_settings(DatabaseSettings::with_url(
        "postgres://root:secret@127.0.0.1:1/patron",
    ));
    settings.database.startup_timeout_secs = 2;
    settings.database.connect_timeout_ms = 300;
    let app = Application::build(settings, &all_modules())
        .await
        .expect("build");
    let port = app.port();
    let run = tokio::spawn(app.run_until_stopped());

    // While storage is not ready the server answers health with NOT_SERVING.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: ServiceKind::Scoring.grpc_name().into(),
        })
        .await
        .expect("health answers while waiting")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);

    let err = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("gives up within the start-up timeout")
        .expect("task")
        .expect_err("must fail");
    let message = err.to_string();
    assert!(
        message
            .contains("cannot connect to the database at postgres://root:***@127.0.0.1:1/patron"),
        "{message}"
    );
    assert!(!message.contains("secret"), "password leaked: {message}");
}

#[tokio::test]
async fn a_service_without_its_peers_configured_is_a_config_error() {
    let settings = test_settings(DatabaseSettings::with_url("sqlite::memory:"));
    let err = Application::build(settings, &[patron_campaign::module()])
        .await
        .err()
        .expect("must fail");
    let message = err.to_string();
    assert!(message.contains("peers.profile"), "{message}");
}
