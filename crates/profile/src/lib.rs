//! `patron.profile.v1.CustomerProfileService`: the system of record for
//! customers, transactions, behaviour events and contact history, with an
//! ordered change feed (transactional outbox) and privacy operations.

mod convert;
mod feed;
mod grpc;
mod mask;
mod service;

use patron_proto::profile::customer_profile_service_server::CustomerProfileServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

pub use service::ProfileApi;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Profile,
        depends_on: &[],
        register,
        on_ready: None,
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    routes.add_service(patron_runtime::with_codec_settings!(
        ctx,
        CustomerProfileServiceServer::new(ProfileApi::new(ctx))
    ));
}
