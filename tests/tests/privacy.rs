//! The right to erasure, end to end: a customer's personal data spreads to
//! every service (profile's record and feed, feedback's comments and
//! complaints, campaign's target view, scoring's cache); after
//! `EraseCustomer` none of it is left in any table of any service, in
//! Redis, or in the logs written during the test.

use std::{
    io::Write,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use patron_runtime::config::{LogFormat, LogSettings};
use patron_tests::{
    Backend, TestApp,
    pb::{campaign as cpb, common, feedback as fpb, profile as ppb, scoring as spb},
    redis_url, skip,
};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

/// Everything logged in this process, at debug level.
static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(|| {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let settings = LogSettings {
        format: LogFormat::Json,
        filter: "debug,h2=info,hyper=info,tower=info,sqlx=info".into(),
    };
    let _ = tracing::subscriber::set_global_default(patron_runtime::telemetry::subscriber(
        &settings,
        move || Capture(sink.clone()),
        None,
    ));
    buffer
});

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The personal data of one test customer: unique strings, so that any
/// copy anywhere can be found.
struct Pii {
    name: String,
    email: String,
    phone: String,
    city: String,
    note: String,
    property: String,
    comment: String,
    complaint: String,
}

impl Pii {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let digits: String = tag.bytes().map(|b| char::from(b'0' + b % 10)).collect();
        Self {
            name: format!("Zebulon{tag}"),
            email: format!("zeb{tag}@example.org"),
            phone: format!("+4915{digits}"),
            city: format!("Quixotown{tag}"),
            note: format!("note{tag}"),
            property: format!("searched{tag}"),
            comment: format!("comment{tag}"),
            complaint: format!("complaint{tag}"),
        }
    }

    fn all(&self) -> [&str; 8] {
        [
            &self.name,
            &self.email,
            &self.phone,
            &self.city,
            &self.note,
            &self.property,
            &self.comment,
            &self.complaint,
        ]
    }

    /// Which of the strings occur in `haystack`, as text or hex (bytea,
    /// blobs and encoded protobuf show up as hex in a text dump).
    fn found_in(&self, haystack: &str) -> Vec<String> {
        let lower = haystack.to_lowercase();
        self.all()
            .into_iter()
            .filter(|s| {
                let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                lower.contains(&s.to_lowercase()) || lower.contains(&hex)
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Every row of every table, as text.
async fn dump_database(url: &str) -> Vec<(String, String)> {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let tables_sql = match backend {
        DbBackend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        }
        _ => "SELECT name FROM sqlite_master WHERE type = 'table'",
    };
    let tables: Vec<String> = db
        .query_all_raw(Statement::from_string(backend, tables_sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert!(tables.len() > 15, "tables: {tables:?}");
    let mut rows = Vec::new();
    for table in tables {
        let sql = match backend {
            DbBackend::Postgres => format!("SELECT CAST(t AS text) FROM \"{table}\" t"),
            _ => {
                let columns: Vec<String> = db
                    .query_all_raw(Statement::from_string(
                        backend,
                        format!("SELECT name FROM pragma_table_info('{table}')"),
                    ))
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.try_get_by_index::<String>(0).unwrap())
                    .collect();
                let quoted: Vec<String> =
                    columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
                format!("SELECT {} FROM \"{table}\"", quoted.join(" || '|' || "))
            }
        };
        for row in db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
        {
            rows.push((
                table.clone(),
                row.try_get_by_index::<String>(0).unwrap_or_default(),
            ));
        }
    }
    db.close().await.unwrap();
    rows
}

/// Every entry under `prefix`: `key field value` for the hashes the score
/// cache keeps its entries in, `key value` for any other key.
async fn dump_redis(url: &str, prefix: &str) -> Vec<String> {
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let (mut conn, keys) = patron_tests::redis_keys(url, prefix).await;
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind == "hash" {
            let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for (field, value) in fields {
                out.push(format!("{key} {field} {}", hex(&value)));
            }
        } else {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            out.push(format!("{key} {}", hex(&value.unwrap_or_default())));
        }
    }
    out
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn erasure_leaves_nothing(backend: Backend) {
    let logs = LazyLock::force(&LOGS).clone();
    let Some(redis) = redis_url() else {
        skip("privacy test", "REDIS_URL is not set");
        return;
    };
    let prefix = format!("patron-privacy-{}:", uuid::Uuid::new_v4().simple());
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.redis.url = Some(redis.clone().into());
        s.redis.key_prefix = prefix.clone();
    })
    .await
    else {
        return;
    };
    let pii = Pii::new();
    let now = chrono::Utc::now().timestamp();
    let ts = |s: i64| {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    };

    let customer = app
        .profile()
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                external_id: "privacy-1".into(),
                display_name: pii.name.clone(),
                email: pii.email.clone(),
                phone: pii.phone.clone(),
                city: pii.city.clone(),
                region: "East".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = customer.id.clone();
    app.profile()
        .record_transactions(ppb::RecordTransactionsRequest {
            transactions: (0..3)
                .map(|k| ppb::Transaction {
                    id: format!("privacy-tx-{k}"),
                    customer_id: id.clone(),
                    occurred_at: ts(now - 86_400 * (30 + 20 * k)),
                    amount: Some(common::Money {
                        currency_code: "EUR".into(),
                        units: 40,
                        nanos: 0,
                    }),
                    quantity: 1,
                    category: "books".into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap();
    app.profile()
        .record_interactions(ppb::RecordInteractionsRequest {
            interactions: vec![ppb::Interaction {
                id: "privacy-in".into(),
                customer_id: id.clone(),
                kind: ppb::InteractionKind::Chat as i32,
                occurred_at: ts(now - 3_600),
                notes: pii.note.clone(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    app.profile()
        .record_events(ppb::RecordEventsRequest {
            events: vec![ppb::Event {
                id: "privacy-ev".into(),
                customer_id: id.clone(),
                kind: ppb::EventKind::Search as i32,
                occurred_at: ts(now - 7_200),
                properties: [("query".to_owned(), pii.property.clone())].into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    app.feedback()
        .submit_survey_responses(fpb::SubmitSurveyResponsesRequest {
            responses: vec![fpb::SurveyResponse {
                id: "privacy-nps".into(),
                customer_id: id.clone(),
                kind: fpb::SurveyKind::Nps as i32,
                score: 2,
                comment: pii.comment.clone(),
                occurred_at: ts(now - 600),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    app.feedback()
        .file_complaint(fpb::FileComplaintRequest {
            complaint: Some(fpb::Complaint {
                customer_id: id.clone(),
                r#type: "delivery".into(),
                description: pii.complaint.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    // Other customers, so that the purchase models can be fitted.
    patron_tests::seed_buyers(&app, 200, 11).await;
    // Scores, and a cached read of them.
    patron_tests::score_everyone(&app, std::slice::from_ref(&id)).await;
    app.scoring()
        .get_score(spb::GetScoreRequest {
            customer_id: id.clone(),
        })
        .await
        .unwrap();
    app.scoring()
        .get_score(spb::GetScoreRequest {
            customer_id: id.clone(),
        })
        .await
        .unwrap();

    // Campaign's view holds the contact data for target lists.
    let preview = || {
        let mut campaign = app.campaign();
        async move {
            campaign
                .preview_segment(cpb::PreviewSegmentRequest {
                    expression: "customer.region = \"East\"".into(),
                    sample_size: 10,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    eventually("campaign sees the customer's email", || async {
        preview().await.sample.iter().any(|t| t.email == pii.email)
    })
    .await;
    let before = dump_database(patron_store::expose_url(&app.settings.database)).await;
    // The sweep must see every piece before erasure, or it proves nothing.
    let seen: std::collections::HashSet<String> = before
        .iter()
        .flat_map(|(_, row)| pii.found_in(row))
        .collect();
    for piece in pii.all() {
        assert!(
            seen.contains(piece),
            "{piece} not found by the sweep before erasure"
        );
    }

    app.profile()
        .erase_customer(ppb::EraseCustomerRequest {
            id: id.clone(),
            reason: "privacy test".into(),
        })
        .await
        .unwrap();
    // Followers apply the erasure asynchronously.
    eventually("campaign forgets the contact data", || async {
        preview()
            .await
            .sample
            .iter()
            .all(|t| t.email.is_empty() && t.display_name.is_empty())
    })
    .await;
    let url = patron_store::expose_url(&app.settings.database).to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leftovers: Vec<String> = dump_database(&url)
            .await
            .into_iter()
            .filter_map(|(table, row)| {
                let found = pii.found_in(&row);
                (!found.is_empty()).then(|| format!("{table}: {found:?}"))
            })
            .collect();
        if leftovers.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "personal data left after erasure:\n{}",
            leftovers.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cached = dump_redis(&redis, &prefix).await;
    for entry in &cached {
        assert!(pii.found_in(entry).is_empty(), "Redis: {entry}");
    }
    drop(app);
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.len() > 1_000, "logs were captured");
    assert!(
        pii.found_in(&logged).is_empty(),
        "personal data in the logs: {:?}",
        pii.found_in(&logged)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_nothing_on_sqlite() {
    erasure_leaves_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_nothing_on_postgres() {
    erasure_leaves_nothing(Backend::Postgres).await;
}
