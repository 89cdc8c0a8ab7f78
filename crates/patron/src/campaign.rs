//! `patron segment ...`, `patron targets export`, `patron campaign ...`:
//! the campaign service from the command line.

use std::{
    collections::BTreeSet,
    io::{BufWriter, Write},
    path::PathBuf,
};

use crate::client::Channel;
use clap::{Subcommand, ValueEnum};
use patron_proto::campaign::{self as pb, campaign_service_client::CampaignServiceClient};

use crate::client::{self, Target};

#[derive(Subcommand)]
pub(crate) enum SegmentCommand {
    /// Save a rule as a segment (see docs/segments.md for the language).
    Create {
        #[arg(long)]
        name: String,
        /// e.g. 'churn.risk = "high" and clv.predicted_365d > 500'
        expression: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        target: Target,
    },
    /// List saved segments with their rules.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// How many customers a rule selects now, with a sample.
    Preview {
        expression: String,
        #[arg(long, default_value_t = 10)]
        sample: i32,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub(crate) enum TargetsCommand {
    /// Stream a target list (a consistent snapshot) to a file or stdout.
    Export {
        /// A saved segment's id.
        #[arg(
            long,
            conflicts_with = "expression",
            required_unless_present = "expression"
        )]
        segment: Option<String>,
        /// Or a rule.
        #[arg(long)]
        expression: Option<String>,
        /// Leave out customers without marketing consent for this channel.
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Default: stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Csv,
    Jsonl,
}

#[derive(Subcommand)]
pub(crate) enum CampaignCommand {
    /// Create a DRAFT campaign on a segment.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        segment: String,
        /// retention, win_back, cross_sell, up_sell, care, acquisition
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "email")]
        channel: String,
        #[arg(long, default_value_t = 0.1)]
        control_fraction: f64,
        #[command(flatten)]
        target: Target,
    },
    /// Freeze the audience and assign treatment and control.
    Launch {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Conversion per arm, uplift with its 95% interval, incremental revenue.
    Report {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

async fn client(target: &Target) -> anyhow::Result<CampaignServiceClient<Channel>> {
    Ok(CampaignServiceClient::new(client::channel(target).await?)
        .max_decoding_message_size(64 << 20))
}

pub(crate) async fn segment(command: SegmentCommand) -> anyhow::Result<()> {
    match command {
        SegmentCommand::Create {
            name,
            expression,
            description,
            target,
        } => {
            let s = client(&target)
                .await?
                .create_segment(pb::CreateSegmentRequest {
                    segment: Some(pb::Segment {
                        display_name: name,
                        expression,
                        description,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            println!("{}\t{}\t{}", s.id, s.display_name, s.expression);
        }
        SegmentCommand::List { target } => {
            let mut c = client(&target).await?;
            let mut token = String::new();
            loop {
                let page = c
                    .list_segments(pb::ListSegmentsRequest {
                        page_size: 200,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for s in &page.segments {
                    println!("{}\t{}\t{}", s.id, s.display_name, s.expression);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        SegmentCommand::Preview {
            expression,
            sample,
            target,
        } => {
            let p = client(&target)
                .await?
                .preview_segment(pb::PreviewSegmentRequest {
                    expression,
                    sample_size: sample,
                })
                .await?
                .into_inner();
            println!("{} customers", p.count);
            for t in &p.sample {
                let fields: Vec<String> = t
                    .fields
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "  {}\t{}\t{}",
                    t.customer_id,
                    t.display_name,
                    fields.join(" ")
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn targets(command: TargetsCommand) -> anyhow::Result<()> {
    let TargetsCommand::Export {
        segment,
        expression,
        channel,
        format,
        output,
        target,
    } = command;
    let mut c = client(&target).await?;
    // The bar's length is the rule's current count (the stream itself is a
    // snapshot taken a moment later, so the two can differ slightly).
    let rule = match &segment {
        Some(id) => {
            c.get_segment(pb::GetSegmentRequest { id: id.clone() })
                .await?
                .into_inner()
                .expression
        }
        None => expression.clone().unwrap_or_default(),
    };
    let approximate = c
        .preview_segment(pb::PreviewSegmentRequest {
            expression: rule,
            sample_size: 1,
        })
        .await?
        .into_inner()
        .count;
    let mut stream = c
        .stream_targets(pb::StreamTargetsRequest {
            segment_id: segment.unwrap_or_default(),
            expression: expression.unwrap_or_default(),
            channel,
        })
        .await?
        .into_inner();
    let out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let out = BufWriter::with_capacity(1 << 20, out);
    let bar = indicatif::ProgressBar::new(approximate.max(0) as u64);
    let mut sink = match format {
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out)), None),
        Format::Jsonl => Sink::Jsonl(out),
    };
    let mut written = 0u64;
    while let Some(message) = stream.message().await? {
        for t in &message.targets {
            sink.write(t)?;
            written += 1;
        }
        bar.set_position(written);
    }
    sink.finish()?;
    bar.finish_and_clear();
    eprintln!("{written} targets");
    Ok(())
}

/// Where exported targets go, in the chosen format.
enum Sink {
    /// The header (the rule's fields, sorted) is written with the first row.
    Csv(
        Box<csv::Writer<BufWriter<Box<dyn Write>>>>,
        Option<Vec<String>>,
    ),
    Jsonl(BufWriter<Box<dyn Write>>),
}

impl Sink {
    fn write(&mut self, t: &pb::Target) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                serde_json::to_writer(
                    &mut *out,
                    &serde_json::json!({
                        "customer_id": t.customer_id,
                        "external_id": t.external_id,
                        "display_name": t.display_name,
                        "email": t.email,
                        "phone": t.phone,
                        "fields": t.fields,
                    }),
                )?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(w, header) => {
                let fields = match header {
                    Some(f) => f,
                    None => {
                        let f: Vec<String> = t
                            .fields
                            .keys()
                            .cloned()
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        let mut names = vec![
                            "customer_id",
                            "external_id",
                            "display_name",
                            "email",
                            "phone",
                        ];
                        names.extend(f.iter().map(String::as_str));
                        w.write_record(&names)?;
                        header.insert(f)
                    }
                };
                let mut record = vec![
                    t.customer_id.as_str(),
                    t.external_id.as_str(),
                    t.display_name.as_str(),
                    t.email.as_str(),
                    t.phone.as_str(),
                ];
                record.extend(
                    fields
                        .iter()
                        .map(|f| t.fields.get(f).map_or("", String::as_str)),
                );
                w.write_record(&record)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(mut w, _) => w.flush()?,
            Sink::Jsonl(mut out) => out.flush()?,
        }
        Ok(())
    }
}

fn kind(name: &str) -> anyhow::Result<pb::CampaignKind> {
    pb::CampaignKind::from_str_name(&format!("CAMPAIGN_KIND_{}", name.to_ascii_uppercase()))
        .filter(|k| *k != pb::CampaignKind::Unspecified)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--kind {name:?}: one of retention, win_back, cross_sell, up_sell, care, acquisition"
            )
        })
}

fn print_campaign(c: &pb::Campaign) {
    let state = pb::CampaignState::try_from(c.state).map_or("?", |s| s.as_str_name());
    println!(
        "{}\t{}\t{}\ttreatment {}\tcontrol {}",
        c.id, c.display_name, state, c.treatment_size, c.control_size
    );
}

pub(crate) async fn campaign(command: CampaignCommand) -> anyhow::Result<()> {
    match command {
        CampaignCommand::Create {
            name,
            segment,
            kind: k,
            channel,
            control_fraction,
            target,
        } => {
            let c = client(&target)
                .await?
                .create_campaign(pb::CreateCampaignRequest {
                    campaign: Some(pb::Campaign {
                        display_name: name,
                        kind: kind(&k)? as i32,
                        segment_id: segment,
                        channel,
                        control_fraction,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
            print_campaign(&c);
        }
        CampaignCommand::Launch { id, target } => {
            let c = client(&target)
                .await?
                .launch_campaign(pb::LaunchCampaignRequest { id })
                .await?
                .into_inner();
            print_campaign(&c);
        }
        CampaignCommand::Report { id, target } => {
            let r = client(&target)
                .await?
                .get_campaign_report(pb::GetCampaignReportRequest { campaign_id: id })
                .await?
                .into_inner();
            let money = |m: &Option<patron_proto::common::Money>| {
                m.as_ref().map_or("-".to_owned(), |m| {
                    format!(
                        "{:.2} {}",
                        m.units as f64 + f64::from(m.nanos) / 1e9,
                        m.currency_code
                    )
                })
            };
            println!(
                "{:<10} {:>10} {:>10} {:>10} {:>16}",
                "ARM", "AUDIENCE", "CONVERTED", "RATE", "REVENUE"
            );
            for (name, arm) in [("treatment", &r.treatment), ("control", &r.control)] {
                let a = arm.clone().unwrap_or_default();
                println!(
                    "{name:<10} {:>10} {:>10} {:>9.2}% {:>16}",
                    a.audience,
                    a.converted,
                    a.conversion_rate * 100.0,
                    money(&a.revenue)
                );
            }
            println!(
                "\nuplift {:+.2} pp (95% CI {:+.2} .. {:+.2}), relative {:+.1}%, incremental revenue {}",
                r.uplift * 100.0,
                r.uplift_ci_low * 100.0,
                r.uplift_ci_high * 100.0,
                r.relative_uplift * 100.0,
                money(&r.incremental_revenue)
            );
        }
    }
    Ok(())
}
