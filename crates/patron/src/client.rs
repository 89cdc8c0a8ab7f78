//! Client subcommands: call a running Patron over gRPC.

use std::{future::Future, process::ExitCode};

use clap::{Args, Subcommand};
use patron_proto::profile::{
    self as pb, customer_profile_service_client::CustomerProfileServiceClient,
};
use patron_runtime::ServiceKind;
/// Every client call carries the caller's token (`--token` / `PATRON_TOKEN`) when given.
pub(crate) use patron_runtime::peers::PeerChannel as Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::render;

#[derive(Args, Clone)]
pub(crate) struct Target {
    /// Server to call.
    #[arg(
        long,
        env = "PATRON_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub(crate) endpoint: String,
    /// Bearer token, when the server requires one (`auth.tokens` or a JWT).
    #[arg(long, env = "PATRON_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum CustomerCommand {
    /// Print one customer as JSON.
    Get {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List customers (AIP-160 filter, e.g. 'region = "East" AND tags:vip').
    List {
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, default_value = "")]
        order_by: String,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        #[command(flatten)]
        target: Target,
    },
    /// Everything held on one customer, as JSON (right of access).
    Export {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Erase a customer's personal data everywhere (right to erasure).
    Erase {
        id: String,
        /// Why (e.g. a ticket number); must not contain personal data.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Create a customer.
    Create {
        #[arg(long)]
        external_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        region: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a client command, printing a failed call's status readably.
pub(crate) async fn run(f: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    match f.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("{}", render::status(status)),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) async fn channel(target: &Target) -> anyhow::Result<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(target.endpoint.clone())?
        .connect_timeout(std::time::Duration::from_secs(3));
    let channel = endpoint
        .connect_with_connector(patron_runtime::cork::connector())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", target.endpoint))?;
    Ok(Channel::new(channel, target.token.as_deref())?)
}

pub(crate) async fn health(target: &Target) -> anyhow::Result<()> {
    let mut client = HealthClient::new(channel(target).await?);
    let mut all_serving = true;
    for kind in ServiceKind::ALL {
        let status = match client
            .check(HealthCheckRequest {
                service: kind.grpc_name().to_owned(),
            })
            .await
        {
            Ok(r) => format!(
                "{:?}",
                ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown)
            ),
            Err(s) if s.code() == tonic::Code::NotFound => "NOT_HOSTED".to_owned(),
            Err(s) => return Err(s.into()),
        };
        all_serving &= status == "Serving" || status == "NOT_HOSTED";
        println!("{:<45} {status}", kind.grpc_name());
    }
    if all_serving {
        Ok(())
    } else {
        anyhow::bail!("not every hosted service is serving")
    }
}

pub(crate) async fn customer(command: CustomerCommand) -> anyhow::Result<()> {
    match command {
        CustomerCommand::Get { id, target } => {
            let mut client = CustomerProfileServiceClient::new(channel(&target).await?);
            let customer = client
                .get_customer(pb::GetCustomerRequest { id })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::to_string_pretty(&render::customer(&customer))?
            );
        }
        CustomerCommand::List {
            filter,
            order_by,
            page_size,
            target,
        } => {
            let mut client = CustomerProfileServiceClient::new(channel(&target).await?);
            let page = client
                .list_customers(pb::ListCustomersRequest {
                    page_size,
                    page_token: String::new(),
                    filter,
                    order_by,
                })
                .await?
                .into_inner();
            println!(
                "{:<38} {:<14} {:<24} {:<10} EMAIL",
                "ID", "EXTERNAL ID", "NAME", "REGION"
            );
            for c in &page.customers {
                println!(
                    "{:<38} {:<14} {:<24} {:<10} {}",
                    c.id, c.external_id, c.display_name, c.region, c.email
                );
            }
            println!("({} of {} matching)", page.customers.len(), page.total_size);
        }
        CustomerCommand::Export { id, target } => {
            let mut client = CustomerProfileServiceClient::new(channel(&target).await?);
            let export = client
                .export_customer_data(pb::ExportCustomerDataRequest { id })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::to_string_pretty(&render::export(&export))?
            );
        }
        CustomerCommand::Erase { id, reason, target } => {
            let mut client = CustomerProfileServiceClient::new(channel(&target).await?);
            let r = client
                .erase_customer(pb::EraseCustomerRequest { id, reason })
                .await?
                .into_inner();
            println!(
                "erased {} (change-feed sequence {})",
                r.customer_id, r.sequence
            );
        }
        CustomerCommand::Create {
            external_id,
            name,
            email,
            region,
            target,
        } => {
            let mut client = CustomerProfileServiceClient::new(channel(&target).await?);
            let customer = client
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer {
                        external_id,
                        display_name: name,
                        email,
                        region,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::to_string_pretty(&render::customer(&customer))?
            );
        }
    }
    Ok(())
}
