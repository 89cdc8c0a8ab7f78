//! `patron import customers|transactions FILE.csv`: bulk loading through the
//! gRPC API in batches, with a progress bar and a summary.
//!
//! Re-running the same file is safe: customers are upserted by external id
//! and transactions are idempotent by id, so a second run reports unchanged
//! customers and duplicate transactions. Rows the file or the server reject
//! are listed with their line numbers; the rest of their batch still loads.

use std::{collections::HashMap, path::Path};

use crate::client::Channel;
use anyhow::Context;
use patron_proto::{
    common::{MarketingConsent, Money},
    google::r#type::Date,
    profile::{self as pb, customer_profile_service_client::CustomerProfileServiceClient},
};
use prost_types::Timestamp;
use tonic_types::StatusExt;

const BATCH: usize = 1_000;

#[derive(Debug, Default)]
pub(crate) struct ImportSummary {
    pub(crate) accepted: usize,
    /// Unchanged customers / duplicate transactions (already imported).
    pub(crate) duplicates: usize,
    /// (line, reason)
    pub(crate) rejected: Vec<(u64, String)>,
}

impl ImportSummary {
    pub(crate) fn print(mut self, what: &str) {
        self.rejected.sort();
        println!(
            "{what}: {} accepted, {} already present, {} rejected",
            self.accepted,
            self.duplicates,
            self.rejected.len()
        );
        for (line, reason) in self.rejected.iter().take(50) {
            println!("  line {line}: {reason}");
        }
        if self.rejected.len() > 50 {
            println!("  ... and {} more", self.rejected.len() - 50);
        }
    }
}

fn progress_for(path: &Path) -> indicatif::ProgressBar {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Rows of a CSV file with named columns and their line numbers.
fn rows(path: &Path) -> anyhow::Result<(csv::Reader<std::fs::File>, HashMap<String, usize>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .iter()
        .enumerate()
        .map(|(i, h)| (h.to_lowercase(), i))
        .collect();
    Ok((reader, headers))
}

struct Row<'a> {
    record: &'a csv::StringRecord,
    headers: &'a HashMap<String, usize>,
}

impl Row<'_> {
    fn get(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|i| self.record.get(*i))
            .unwrap_or("")
    }
}

fn parse_bool(s: &str, column: &str) -> Result<bool, String> {
    match s.to_lowercase().as_str() {
        "" | "false" | "0" | "no" | "n" => Ok(false),
        "true" | "1" | "yes" | "y" => Ok(true),
        _ => Err(format!("{column}: {s:?} is not true/false")),
    }
}

fn parse_date(s: &str, column: &str) -> Result<Option<Date>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{column}: {s:?} is not YYYY-MM-DD"))?;
    use chrono::Datelike;
    Ok(Some(Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }))
}

fn parse_enum(s: &str, column: &str, values: &[&str]) -> Result<i32, String> {
    if s.is_empty() {
        return Ok(0);
    }
    values
        .iter()
        .position(|v| v.eq_ignore_ascii_case(s))
        .map(|i| i as i32 + 1)
        .ok_or_else(|| format!("{column}: {s:?} must be one of {}", values.join(", ")))
}

fn customer_from_row(row: &Row<'_>) -> Result<pb::Customer, String> {
    let consent = |c: &str| parse_bool(row.get(&format!("consent_{c}")), &format!("consent_{c}"));
    Ok(pb::Customer {
        external_id: row.get("external_id").to_owned(),
        display_name: row.get("display_name").to_owned(),
        email: row.get("email").to_owned(),
        phone: row.get("phone").to_owned(),
        birth_date: parse_date(row.get("birth_date"), "birth_date")?,
        gender: parse_enum(
            row.get("gender"),
            "gender",
            &["female", "male", "other", "undisclosed"],
        )?,
        region: row.get("region").to_owned(),
        city: row.get("city").to_owned(),
        occupation: row.get("occupation").to_owned(),
        income_band: parse_enum(
            row.get("income_band"),
            "income_band",
            &["low", "lower_middle", "middle", "upper_middle", "high"],
        )?,
        tags: row
            .get("tags")
            .split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        attributes: row
            .headers
            .iter()
            .filter_map(|(h, i)| {
                let key = h.strip_prefix("attr_")?;
                let value = row.record.get(*i)?;
                (!value.is_empty()).then(|| (key.to_owned(), value.to_owned()))
            })
            .collect(),
        marketing_consent: Some(MarketingConsent {
            email: consent("email")?,
            sms: consent("sms")?,
            phone: consent("phone")?,
            push: consent("push")?,
            post: consent("post")?,
        }),
        relationship_start_date: parse_date(
            row.get("relationship_start_date"),
            "relationship_start_date",
        )?,
        ..Default::default()
    })
}

/// "19.99" or "-5.5" into google.type.Money parts, exactly.
pub(crate) fn parse_money(s: &str, currency: &str, column: &str) -> Result<Money, String> {
    let bad = || format!("{column}: {s:?} is not a decimal amount");
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 9
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let units: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let nanos: i32 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    let sign = if negative { -1 } else { 1 };
    Ok(Money {
        currency_code: currency.to_uppercase(),
        units: sign * units,
        nanos: sign as i32 * nanos,
    })
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| format!("occurred_at: {s:?} is not RFC 3339 or YYYY-MM-DD"))?;
    Ok(Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn transaction_from_row(row: &Row<'_>) -> Result<(pb::Transaction, String), String> {
    let currency = match row.get("currency") {
        "" => "EUR",
        c => c,
    };
    let amount = parse_money(row.get("amount"), currency, "amount")?;
    let cost = match row.get("cost") {
        "" => None,
        c => Some(parse_money(c, currency, "cost")?),
    };
    let quantity = match row.get("quantity") {
        "" => 1,
        q => q
            .parse()
            .map_err(|_| format!("quantity: {q:?} is not an integer"))?,
    };
    let t = pb::Transaction {
        id: row.get("id").to_owned(),
        customer_id: row.get("customer_id").to_owned(),
        occurred_at: Some(parse_time(row.get("occurred_at"))?),
        amount: Some(amount),
        cost,
        channel: row.get("channel").to_owned(),
        product_id: row.get("product_id").to_owned(),
        category: row.get("category").to_owned(),
        quantity,
        region: row.get("region").to_owned(),
        ..Default::default()
    };
    if t.customer_id.is_empty() && row.get("customer_external_id").is_empty() {
        return Err("customer_id or customer_external_id is required".into());
    }
    Ok((t, row.get("customer_external_id").to_owned()))
}

/// Sends one batch of (line, row). When the server rejects it with field
/// violations on some items, those rows are recorded as rejected (with the
/// server's reasons) and the rest is sent once more. `send` answers
/// (accepted, already present).
async fn send_dropping_rejected<R, F, Fut>(
    mut pending: Vec<(u64, R)>,
    field: &str,
    summary: &mut ImportSummary,
    mut send: F,
) -> anyhow::Result<()>
where
    R: Clone,
    F: FnMut(Vec<R>) -> Fut,
    Fut: std::future::Future<Output = Result<(usize, usize), tonic::Status>>,
{
    for _ in 0..2 {
        if pending.is_empty() {
            return Ok(());
        }
        match send(pending.iter().map(|(_, r)| r.clone()).collect()).await {
            Ok((accepted, present)) => {
                summary.accepted += accepted;
                summary.duplicates += present;
                return Ok(());
            }
            Err(status) => {
                let bad = rejected_items(&status, field).ok_or(status)?;
                let mut kept = Vec::with_capacity(pending.len());
                for (i, (line, row)) in pending.into_iter().enumerate() {
                    match bad.get(&i) {
                        Some(reason) => summary.rejected.push((line, reason.clone())),
                        None => kept.push((line, row)),
                    }
                }
                pending = kept;
            }
        }
    }
    Ok(())
}

/// The violations of a rejected batch, by item index (`customers[3].email` -> 3).
fn rejected_items(status: &tonic::Status, field: &str) -> Option<HashMap<usize, String>> {
    if status.code() != tonic::Code::InvalidArgument {
        return None;
    }
    let details = status.get_error_details();
    let bad = details.bad_request()?;
    let mut out: HashMap<usize, String> = HashMap::new();
    for v in &bad.field_violations {
        let rest = v.field.strip_prefix(field)?.strip_prefix('[')?;
        let (index, path) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        let path = path.trim_start_matches('.');
        let entry = out.entry(index).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        entry.push_str(&format!("{path}: {}", v.description));
    }
    (!out.is_empty()).then_some(out)
}

pub(crate) async fn customers(channel: Channel, path: &Path) -> anyhow::Result<ImportSummary> {
    let client = CustomerProfileServiceClient::new(channel);
    let (mut reader, headers) = rows(path)?;
    anyhow::ensure!(
        headers.contains_key("external_id"),
        "{}: an external_id column is required",
        path.display()
    );
    let bar = progress_for(path);
    let mut summary = ImportSummary::default();
    let mut batch: Vec<(u64, pb::Customer)> = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                summary
                    .rejected
                    .push((e.position().map_or(0, |p| p.line()), e.to_string()));
                continue;
            }
        };
        if more {
            let line = record.position().map_or(0, |p| p.line());
            match customer_from_row(&Row {
                record: &record,
                headers: &headers,
            }) {
                Ok(c) => batch.push((line, c)),
                Err(reason) => summary.rejected.push((line, reason)),
            }
            bar.set_position(record.position().map_or(0, |p| p.byte()));
        }
        if batch.len() == BATCH || (!more && !batch.is_empty()) {
            let pending = std::mem::take(&mut batch);
            send_dropping_rejected(pending, "customers", &mut summary, |customers| {
                let mut client = client.clone();
                async move {
                    let r = client
                        .upsert_customers(pb::UpsertCustomersRequest { customers })
                        .await?
                        .into_inner();
                    Ok(((r.created + r.updated) as usize, r.unchanged as usize))
                }
            })
            .await?;
        }
        if !more {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

pub(crate) async fn transactions(channel: Channel, path: &Path) -> anyhow::Result<ImportSummary> {
    let mut client = CustomerProfileServiceClient::new(channel);
    let (mut reader, headers) = rows(path)?;
    anyhow::ensure!(
        headers.contains_key("id")
            && headers.contains_key("amount")
            && headers.contains_key("occurred_at"),
        "{}: id, amount and occurred_at columns are required",
        path.display()
    );
    let bar = progress_for(path);
    let mut summary = ImportSummary::default();
    let mut ids_by_external: HashMap<String, String> = HashMap::new();
    let mut batch: Vec<(u64, pb::Transaction, String)> = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    loop {
        let more = match reader.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                summary
                    .rejected
                    .push((e.position().map_or(0, |p| p.line()), e.to_string()));
                continue;
            }
        };
        if more {
            let line = record.position().map_or(0, |p| p.line());
            match transaction_from_row(&Row {
                record: &record,
                headers: &headers,
            }) {
                Ok((t, external)) => batch.push((line, t, external)),
                Err(reason) => summary.rejected.push((line, reason)),
            }
            bar.set_position(record.position().map_or(0, |p| p.byte()));
        }
        if batch.len() == BATCH || (!more && !batch.is_empty()) {
            let mut pending = std::mem::take(&mut batch);
            resolve_external_ids(&mut client, &mut ids_by_external, &pending).await?;
            pending.retain_mut(|(line, t, external)| {
                if t.customer_id.is_empty() {
                    match ids_by_external.get(external.as_str()) {
                        Some(id) => t.customer_id = id.clone(),
                        None => {
                            summary.rejected.push((
                                *line,
                                format!("customer_external_id: no customer {external:?}"),
                            ));
                            return false;
                        }
                    }
                }
                true
            });
            let pending = pending.into_iter().map(|(line, t, _)| (line, t)).collect();
            send_dropping_rejected(pending, "transactions", &mut summary, |transactions| {
                let mut client = client.clone();
                async move {
                    let r = client
                        .record_transactions(pb::RecordTransactionsRequest { transactions })
                        .await?
                        .into_inner();
                    Ok((r.accepted as usize, r.duplicates as usize))
                }
            })
            .await?;
        }
        if !more {
            break;
        }
    }
    bar.finish_and_clear();
    summary.rejected.sort();
    Ok(summary)
}

/// Looks up the server ids of the external ids in `rows` not yet known.
async fn resolve_external_ids(
    client: &mut CustomerProfileServiceClient<Channel>,
    known: &mut HashMap<String, String>,
    rows: &[(u64, pb::Transaction, String)],
) -> anyhow::Result<()> {
    let mut wanted: Vec<&str> = rows
        .iter()
        .filter(|(_, t, e)| {
            t.customer_id.is_empty() && !e.is_empty() && !known.contains_key(e.as_str())
        })
        .map(|(_, _, e)| e.as_str())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    for chunk in wanted.chunks(50) {
        let filter = chunk
            .iter()
            .map(|e| {
                format!(
                    "external_id = \"{}\"",
                    e.replace('\\', "\\\\").replace('"', "\\\"")
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let page = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 1_000,
                filter,
                ..Default::default()
            })
            .await?
            .into_inner();
        known.extend(page.customers.into_iter().map(|c| (c.external_id, c.id)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_parsed_exactly() {
        let m = parse_money("19.99", "eur", "amount").unwrap();
        assert_eq!(
            (m.currency_code.as_str(), m.units, m.nanos),
            ("EUR", 19, 990_000_000)
        );
        let m = parse_money("-5.5", "USD", "amount").unwrap();
        assert_eq!((m.units, m.nanos), (-5, -500_000_000));
        let m = parse_money(".25", "USD", "amount").unwrap();
        assert_eq!((m.units, m.nanos), (0, 250_000_000));
        for bad in ["", "abc", "1.2.3", "1e5", "1.0000000001", "-"] {
            assert!(parse_money(bad, "EUR", "amount").is_err(), "{bad}");
        }
    }

    const CUSTOMER_COLUMNS: &[&str] = &[
        "external_id",
        "display_name",
        "email",
        "phone",
        "birth_date",
        "gender",
        "region",
        "city",
        "occupation",
        "income_band",
        "tags",
        "relationship_start_date",
    ];
    const TRANSACTION_COLUMNS: &[&str] = &[
        "id",
        "customer_id",
        "customer_external_id",
        "occurred_at",
        "amount",
        "cost",
        "currency",
        "quantity",
        "channel",
        "product_id",
        "category",
        "region",
    ];

    fn with_row<T>(columns: &[&str], cells: &[String], f: impl Fn(&Row<'_>) -> T) -> T {
        let headers: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| ((*c).to_owned(), i))
            .collect();
        let record = csv::StringRecord::from(cells.to_vec());
        f(&Row {
            record: &record,
            headers: &headers,
        })
    }

    proptest::proptest! {
        /// Any cell contents: a row becomes a request item or a message
        /// naming the problem, never a panic.
        #[test]
        fn any_customer_row_parses_or_says_why(cells in proptest::collection::vec("\\PC{0,24}|[0-9-]{0,12}|true|false", 12)) {
            if let Err(why) = with_row(CUSTOMER_COLUMNS, &cells, customer_from_row) {
                proptest::prop_assert!(!why.is_empty());
            }
        }

        #[test]
        fn any_transaction_row_parses_or_says_why(cells in proptest::collection::vec("\\PC{0,24}|-?[0-9]{0,6}(\\.[0-9]{0,10})?|2025-0[1-9]-[0-3][0-9](T12:00:00Z)?", 12)) {
            if let Err(why) = with_row(TRANSACTION_COLUMNS, &cells, transaction_from_row) {
                proptest::prop_assert!(!why.is_empty());
            }
        }

        /// Decimal amounts are exact: units and nanos reproduce the text.
        #[test]
        fn money_text_round_trips(units in -1_000_000_000i64..1_000_000_000, nanos in 0u32..1_000_000_000) {
            let text = format!("{units}.{nanos:09}");
            let m = parse_money(&text, "EUR", "amount").unwrap();
            let sign = if text.starts_with('-') { -1 } else { 1 };
            proptest::prop_assert_eq!(m.units, units);
            proptest::prop_assert_eq!(i64::from(m.nanos), sign * i64::from(nanos));
        }
    }
}
