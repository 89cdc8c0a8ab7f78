//! `patron`: run Patron (all services or some in one process), administer it,
//! and call it from the command line.

mod client;
mod render;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use patron_runtime::{ServiceKind, ServiceModule, Settings, server, telemetry};

#[derive(Parser)]
#[command(
    name = "patron",
    version,
    about = "Customer analytics: profiles, scores, feedback, campaigns"
)]
struct Cli {
    /// Configuration file (TOML); also PATRON_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the chosen services (default all) in one process on one port.
    Serve {
        /// Listen address, e.g. 0.0.0.0:50051 (overrides server.addr).
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<std::net::SocketAddr>,
        /// Comma-separated subset of profile,scoring,feedback,campaign.
        #[arg(long, value_delimiter = ',')]
        services: Vec<ServiceKind>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, value_delimiter = ',')]
        services: Vec<ServiceKind>,
    },
    /// Check grpc.health.v1 of a running server.
    Health {
        #[command(flatten)]
        target: client::Target,
    },
    /// Customer records.
    Customer {
        #[command(subcommand)]
        command: client::CustomerCommand,
    },
}

fn modules(kinds: &[ServiceKind]) -> Vec<ServiceModule> {
    kinds
        .iter()
        .map(|k| match k {
            ServiceKind::Profile => patron_profile::module(),
            ServiceKind::Scoring => patron_scoring::module(),
            ServiceKind::Feedback => patron_feedback::module(),
            ServiceKind::Campaign => patron_campaign::module(),
        })
        .collect()
}

fn load_settings(config: Option<&std::path::Path>) -> Result<Settings, ExitCode> {
    Settings::load(config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { addr, services } => {
            let mut settings = match load_settings(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(addr) = addr {
                settings.server.addr = addr;
            }
            if !services.is_empty() {
                settings.services = services;
            }
            telemetry::init(&settings.log);
            let kinds = settings.effective_services();
            match server::serve(settings, &modules(&kinds)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate { services } => {
            let settings = match load_settings(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            telemetry::init(&settings.log);
            let kinds = if services.is_empty() {
                ServiceKind::ALL.to_vec()
            } else {
                services
            };
            let result = async {
                let storage = patron_store::Storage::connect_lazy(&settings.database).await?;
                let schemas: Vec<_> = kinds.iter().map(|k| k.schema()).collect();
                storage.ready(&schemas, true).await?;
                Ok::<_, patron_store::StoreError>(storage.url_for_logs().to_owned())
            }
            .await;
            match result {
                Ok(url) => {
                    println!(
                        "migrated {} on {url}",
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Health { target } => client::run(client::health(&target)).await,
        Command::Customer { command } => client::run(client::customer(command)).await,
    }
}
