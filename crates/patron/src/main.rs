//! `patron`: run Patron (all services or some in one process), administer it,
//! and call it from the command line.

mod bench;
mod campaign;
mod client;
mod demo;
mod import;
mod load;
mod render;
mod report;

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
        /// Fill an empty database with the deterministic demo population.
        #[arg(long)]
        demo: bool,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics (overrides metrics_addr).
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<std::net::SocketAddr>,
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
    /// Load CSV files through the API (safe to re-run).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Demo data.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Customer scores.
    Score {
        #[command(subcommand)]
        command: ScoreCommand,
    },
    /// Purchase models (BG/NBD + Gamma-Gamma).
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Reports as readable tables.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Segments written in the segment language.
    Segment {
        #[command(subcommand)]
        command: campaign::SegmentCommand,
    },
    /// Target lists.
    Targets {
        #[command(subcommand)]
        command: campaign::TargetsCommand,
    },
    /// Campaigns with control groups.
    Campaign {
        #[command(subcommand)]
        command: campaign::CampaignCommand,
    },
    /// Load generators (figures for BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Customers: external_id, display_name, email, phone, birth_date, gender, region, city,
    /// occupation, income_band, tags (;-separated), consent_email..consent_post, attr_* columns.
    Customers {
        file: PathBuf,
        #[command(flatten)]
        target: client::Target,
    },
    /// Transactions: id, customer_id or customer_external_id, occurred_at, amount, currency,
    /// cost, channel, product_id, category, quantity, region.
    Transactions {
        file: PathBuf,
        #[command(flatten)]
        target: client::Target,
    },
}

#[derive(Subcommand)]
enum ScoreCommand {
    /// One customer's scores as JSON.
    Get {
        id: String,
        #[command(flatten)]
        target: client::Target,
    },
    /// Recompute every customer's scores with the newest model (progress bar).
    Recompute {
        /// Scoring date, YYYY-MM-DD (UTC); default now.
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        #[command(flatten)]
        target: client::Target,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fit on the data up to --as-of (default now); with --holdout-end, validate on the period after.
    Fit {
        /// Calibration end, YYYY-MM-DD (UTC).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        #[arg(long)]
        holdout_end: Option<chrono::NaiveDate>,
        #[command(flatten)]
        target: client::Target,
    },
    /// The model in use.
    Show {
        #[command(flatten)]
        target: client::Target,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Customers per RFM segment, value tier, quadrant, churn risk and lifecycle stage.
    Segments {
        #[command(flatten)]
        target: client::Target,
    },
    /// Retention per first-purchase month cohort.
    Cohorts {
        /// First cohort, YYYY-MM-DD (default: all).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        #[arg(long, default_value_t = 12)]
        months: i32,
        #[command(flatten)]
        target: client::Target,
    },
    /// Churn rate per period (default the last 365 days by month).
    Churn {
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// day, week, month, quarter or year.
        #[arg(long, default_value = "month")]
        period: String,
        #[command(flatten)]
        target: client::Target,
    },
    /// Transactions, customers, units and revenue per region x category x period.
    Products {
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        #[arg(long, default_value = "month")]
        period: String,
        /// Split each row by sales channel too.
        #[arg(long)]
        by_channel: bool,
        #[command(flatten)]
        target: client::Target,
    },
    /// Net Promoter Score, optionally by product, region or channel.
    Nps {
        #[arg(long, default_value = "")]
        by: String,
        #[command(flatten)]
        target: client::Target,
    },
    /// Complaints: resolution rate and times, optionally by type, product, region or assignee.
    Complaints {
        #[arg(long, default_value = "")]
        by: String,
        #[command(flatten)]
        target: client::Target,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Write the deterministic demo population into a running server.
    Seed {
        #[arg(long, default_value_t = DEMO_CUSTOMERS)]
        customers: usize,
        #[arg(long, default_value_t = DEMO_SEED)]
        seed: u64,
        #[command(flatten)]
        target: client::Target,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// RecordTransactions throughput.
    Ingest {
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        transactions: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        target: client::Target,
    },
    /// GetNpsReport by product over many survey responses.
    Nps {
        #[arg(long, default_value_t = 1_000_000)]
        responses: usize,
        #[command(flatten)]
        target: client::Target,
    },
    /// Segment evaluation and StreamTargets over a seeded population.
    Targets {
        #[arg(long, default_value_t = 1_000_000)]
        customers: usize,
        /// Measure again on the customers an earlier run seeded (its tag).
        #[arg(long)]
        reuse: Option<String>,
        #[command(flatten)]
        target: client::Target,
    },
    /// GetScore (1 and many in flight) and BatchGetScores on cached scores.
    Scores {
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        /// Measure again on the customers an earlier run seeded (its tag).
        #[arg(long)]
        reuse: Option<String>,
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// HTTP/2 connections the calls are spread over (at least one per core).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Length of each measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seeded customers drop out after each purchase with a probability
        /// drawn from [this, 10 x this): smaller means more purchases each
        /// (0.05: about 4 per customer, 0.015: about 10).
        #[arg(long, default_value_t = 0.05)]
        drop_from: f64,
        #[command(flatten)]
        target: client::Target,
    },
    /// Writing many scores to Redis, as a recompute refreshes the cache.
    CacheRefresh {
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
        /// Bytes per cached score.
        #[arg(long, default_value_t = 300)]
        value_bytes: usize,
        /// Redis URL (default: REDIS_URL).
        #[arg(long, env = "REDIS_URL")]
        redis_url: String,
    },
    /// StreamChanges catch-up speed from a sequence to the head.
    Feed {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[command(flatten)]
        target: client::Target,
    },
}

const DEMO_CUSTOMERS: usize = 5_000;
const DEMO_SEED: u64 = 42;

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

/// `patron ... | head` closes stdout early; `println!` then panics. Exit
/// the way Unix tools do (status 141, killed by SIGPIPE) instead of printing
/// a panic.
fn exit_quietly_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

#[tokio::main]
async fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            addr,
            services,
            demo,
            metrics_addr,
        } => {
            let mut settings = match load_settings(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(addr) = addr {
                settings.server.addr = addr;
            }
            if metrics_addr.is_some() {
                settings.metrics_addr = metrics_addr;
            }
            if !services.is_empty() {
                settings.services = services;
            }
            let telemetry = match telemetry::init(
                &settings.log,
                &settings.tracing,
                &settings.service_name(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let kinds = settings.effective_services();
            let result = serve(settings, &kinds, demo).await;
            telemetry.shutdown().await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate { services } => {
            let settings = match load_settings(cli.config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // Logs only: nothing here is worth a trace.
            let _ = telemetry::init(
                &settings.log,
                &patron_runtime::config::TracingSettings::default(),
                "patron",
            );
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
        Command::Import { command } => {
            client::run(async {
                match command {
                    ImportCommand::Customers { file, target } => {
                        import::customers(client::channel(&target).await?, &file).await?.print("customers")
                    }
                    ImportCommand::Transactions { file, target } => {
                        import::transactions(client::channel(&target).await?, &file).await?.print("transactions")
                    }
                }
                Ok(())
            })
            .await
        }
        Command::Demo { command: DemoCommand::Seed { customers, seed, target } } => {
            client::run(async {
                let bar = indicatif::ProgressBar::new(0);
                let s = demo::seed(client::channel(&target).await?, seed, customers, &bar).await?;
                println!(
                    "demo data: {} customers, {} transactions, {} events, {} interactions, {} survey responses, {} complaints written ({} already present)",
                    s.customers, s.transactions, s.events, s.interactions, s.survey_responses, s.complaints, s.duplicates
                );
                Ok(())
            })
            .await
        }
        Command::Score { command } => {
            client::run(async {
                use patron_proto::scoring::{GetScoreRequest, RecomputeScoresRequest, scoring_service_client::ScoringServiceClient};
                match command {
                    ScoreCommand::Get { id, target } => {
                        let score = ScoringServiceClient::new(client::channel(&target).await?)
                            .get_score(GetScoreRequest { customer_id: id })
                            .await?
                            .into_inner()
                            .score;
                        println!("{}", serde_json::to_string_pretty(&render::score(&score))?);
                    }
                    ScoreCommand::Recompute { as_of, target } => {
                        let as_of = as_of.map(|d| prost_types::Timestamp {
                            seconds: d.and_hms_opt(23, 59, 59).unwrap_or_default().and_utc().timestamp(),
                            nanos: 0,
                        });
                        let mut stream = ScoringServiceClient::new(client::channel(&target).await?)
                            .recompute_scores(RecomputeScoresRequest { as_of })
                            .await?
                            .into_inner();
                        let bar = indicatif::ProgressBar::new(0);
                        let mut last = None;
                        while let Some(m) = stream.message().await? {
                            bar.set_length(m.total as u64);
                            bar.set_position(m.done as u64);
                            last = Some(m);
                        }
                        bar.finish_and_clear();
                        match last {
                            Some(m) if m.model_version.is_empty() => println!(
                                "scored {} customers without a purchase model (nobody has made a repeat purchase yet: no predictions, tiers or quadrants)",
                                m.done
                            ),
                            Some(m) => println!("scored {} customers with model {}", m.done, m.model_version),
                            None => {}
                        }
                    }
                }
                Ok(())
            })
            .await
        }
        Command::Model { command } => {
            client::run(async {
                use patron_proto::scoring::{FitModelRequest, GetModelRequest, scoring_service_client::ScoringServiceClient};
                let day = |d: chrono::NaiveDate| prost_types::Timestamp {
                    seconds: d.and_hms_opt(23, 59, 59).unwrap_or_default().and_utc().timestamp(),
                    nanos: 0,
                };
                let fit = match command {
                    ModelCommand::Fit { as_of, holdout_end, target } => {
                        ScoringServiceClient::new(client::channel(&target).await?)
                            .fit_model(FitModelRequest { as_of: as_of.map(day), holdout_end: holdout_end.map(day) })
                            .await?
                            .into_inner()
                    }
                    ModelCommand::Show { target } => {
                        ScoringServiceClient::new(client::channel(&target).await?).get_model(GetModelRequest {}).await?.into_inner()
                    }
                };
                println!("{}", serde_json::to_string_pretty(&render::model(&fit))?);
                Ok(())
            })
            .await
        }
        Command::Report { command } => {
            client::run(async {
                match command {
                    ReportCommand::Segments { target } => report::segments(client::channel(&target).await?).await,
                    ReportCommand::Cohorts { from, months, target } => report::cohorts(client::channel(&target).await?, from, months).await,
                    ReportCommand::Churn { from, period, target } => report::churn(client::channel(&target).await?, from, &period).await,
                    ReportCommand::Products { from, period, by_channel, target } => report::products(client::channel(&target).await?, from, &period, by_channel).await,
                    ReportCommand::Nps { by, target } => report::nps(client::channel(&target).await?, &by).await,
                    ReportCommand::Complaints { by, target } => report::complaints(client::channel(&target).await?, &by).await,
                }
            })
            .await
        }
        Command::Segment { command } => client::run(campaign::segment(command)).await,
        Command::Targets { command } => client::run(campaign::targets(command)).await,
        Command::Campaign { command } => client::run(campaign::campaign(command)).await,
        Command::Bench { command } => {
            client::run(async {
                match command {
                    BenchCommand::Ingest { customers, transactions, batch, concurrency, target } => {
                        bench::ingest(client::channel(&target).await?, customers, transactions, batch, concurrency).await
                    }
                    BenchCommand::Feed { after, target } => bench::feed(client::channel(&target).await?, after).await,
                    BenchCommand::Targets { customers, reuse, target } => bench::targets(client::channel(&target).await?, customers, reuse).await,
                    BenchCommand::Nps { responses, target } => bench::nps(client::channel(&target).await?, responses).await,
                    BenchCommand::Scores { customers, reuse, in_flight, connections, seconds, drop_from, target } => {
                        bench::scores(&target, customers, reuse, in_flight, connections, seconds, drop_from).await
                    }
                    BenchCommand::CacheRefresh { entries, value_bytes, redis_url } => bench::cache_refresh(&redis_url, entries, value_bytes).await,
                }
            })
            .await
        }
    }
}

/// Runs the server; with `demo`, seeds an empty database once it is ready.
async fn serve(settings: Settings, kinds: &[ServiceKind], demo: bool) -> anyhow::Result<()> {
    let app = server::Application::build(settings, &modules(kinds)).await?;
    let app_peers = app.context().peers.clone();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    if demo {
        anyhow::ensure!(
            kinds.contains(&ServiceKind::Profile),
            "--demo needs the profile service"
        );
        // The in-process peer channel: it carries this process's token and TLS.
        let channel = app_peers
            .channel(ServiceKind::Profile)
            .expect("the profile service is served here");
        let seeded = tokio::select! {
            result = seed_if_empty(channel) => result,
            finished = &mut Box::pin(async { shutdown.cancelled().await }) => Ok(finished),
        };
        if let Err(e) = seeded {
            tracing::error!(error = %format!("{e:#}"), "demo data could not be written");
        }
    }
    running.await??;
    Ok(())
}

async fn seed_if_empty(channel: client::Channel) -> anyhow::Result<()> {
    use patron_proto::profile::{
        ListCustomersRequest, customer_profile_service_client::CustomerProfileServiceClient,
    };
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut health = HealthClient::new(channel.clone());
    loop {
        let ready = health
            .check(HealthCheckRequest {
                service: ServiceKind::Profile.grpc_name().into(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let existing = CustomerProfileServiceClient::new(channel.clone())
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .total_size;
    if existing > 0 {
        tracing::info!(
            customers = existing,
            "database not empty; demo data not written"
        );
        return Ok(());
    }
    tracing::info!(
        customers = DEMO_CUSTOMERS,
        seed = DEMO_SEED,
        "writing demo data"
    );
    let started = std::time::Instant::now();
    let channel_for_scores = channel.clone();
    let s = demo::seed(
        channel,
        DEMO_SEED,
        DEMO_CUSTOMERS,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    demo::score_and_segment(channel_for_scores, s.buyers).await?;
    tracing::info!(
        customers = s.customers,
        transactions = s.transactions,
        events = s.events,
        interactions = s.interactions,
        survey_responses = s.survey_responses,
        complaints = s.complaints,
        seconds = started.elapsed().as_secs_f64(),
        segments = demo::DEMO_SEGMENTS.len(),
        "demo data ready: scored, with example segments"
    );
    Ok(())
}
