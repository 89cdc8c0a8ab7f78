//! Scoring's population reports end to end: cohort retention and churn rate
//! over purchases with hand-computed answers.

use std::time::Duration;

use chrono::NaiveDate;
use patron_tests::{
    TestApp, backend_tests,
    pb::{common, profile as profile_pb, scoring as pb},
    violated_fields,
};
use prost_types::Timestamp;
use tonic::Code;

fn at(date: &str) -> Timestamp {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    Timestamp {
        seconds: d.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp(),
        nanos: 0,
    }
}

fn midnight(date: &str) -> Option<Timestamp> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    Some(Timestamp {
        seconds: d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
        nanos: 0,
    })
}

/// a, b, c buy in early 2025; d last bought on 2024-03-15.
async fn seed(app: &TestApp) {
    // (day, region, category, quantity, channel), 10 EUR each.
    type Purchase = (&'static str, &'static str, &'static str, i32, &'static str);
    let people: [(&str, &[Purchase]); 4] = [
        (
            "a",
            &[
                ("2025-01-05", "East", "books", 1, "web"),
                ("2025-01-20", "East", "books", 2, "store"),
                ("2025-03-02", "West", "toys", 1, "web"),
            ],
        ),
        (
            "b",
            &[
                ("2025-01-31", "East", "books", 1, "web"),
                ("2025-02-01", "East", "toys", 3, "app"),
            ],
        ),
        ("c", &[("2025-02-10", "West", "toys", 1, "")]),
        ("d", &[("2024-03-15", "East", "books", 1, "web")]),
    ];
    for (name, days) in people {
        let id = app
            .profile()
            .create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer {
                    external_id: format!("rep-{name}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let transactions = days
            .iter()
            .enumerate()
            .map(
                |(k, (day, region, category, quantity, channel))| profile_pb::Transaction {
                    id: format!("rep-{name}-{k}"),
                    customer_id: id.clone(),
                    occurred_at: Some(at(day)),
                    amount: Some(common::Money {
                        currency_code: "EUR".into(),
                        units: 10,
                        nanos: 0,
                    }),
                    quantity: *quantity,
                    region: (*region).into(),
                    category: (*category).into(),
                    channel: (*channel).into(),
                    ..Default::default()
                },
            )
            .collect();
        app.profile()
            .record_transactions(profile_pb::RecordTransactionsRequest { transactions })
            .await
            .unwrap();
    }
}

backend_tests! {
    async fn cohort_and_churn_reports_match_hand_computed_figures(app: TestApp) {
        seed(&app).await;
        // Scoring follows the feed: wait until it has every purchase (six
        // customer-months over all time).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = app.scoring().get_cohort_retention_report(pb::GetCohortRetentionReportRequest { months: 36, ..Default::default() }).await.unwrap().into_inner();
            let active: i64 = r.cohorts.iter().flat_map(|c| c.active.iter()).sum();
            if active == 6 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let request = pb::GetCohortRetentionReportRequest { start_time: midnight("2025-01-01"), end_time: midnight("2025-03-01"), months: 3 };
        let report = app.scoring().get_cohort_retention_report(request).await.unwrap().into_inner();
        // January: a and b; February: b; March: a. February cohort: c only.
        assert_eq!(report.cohorts.len(), 2);
        let (jan, feb) = (&report.cohorts[0], &report.cohorts[1]);
        assert_eq!((jan.cohort.as_str(), jan.customers, jan.active.as_slice()), ("2025-01", 2, &[2, 1, 1, 0][..]));
        assert_eq!(jan.retention, [1.0, 0.5, 0.5, 0.0]);
        assert_eq!((feb.cohort.as_str(), feb.customers, feb.active.as_slice()), ("2025-02", 1, &[1, 0, 0, 0][..]));

        let churn = app.scoring().get_churn_rate_report(pb::GetChurnRateReportRequest {
            start_time: midnight("2025-03-01"),
            end_time: midnight("2025-05-01"),
            period: common::Period::Month as i32,
        }).await.unwrap().into_inner();
        assert_eq!(churn.inactivity_days, 365);
        let rows: Vec<(&str, i64, i64)> = churn.periods.iter().map(|p| (p.period.as_str(), p.active_at_start, p.churned)).collect();
        // d's silence passes 365 days on 2025-03-16.
        assert_eq!(rows, [("2025-03", 4, 1), ("2025-04", 3, 0)]);
        assert!((churn.periods[0].churn_rate - 0.25).abs() < 1e-12);

        let quarters = app.scoring().get_churn_rate_report(pb::GetChurnRateReportRequest {
            start_time: midnight("2025-01-01"),
            end_time: midnight("2025-07-01"),
            period: common::Period::Quarter as i32,
        }).await.unwrap().into_inner();
        let labels: Vec<&str> = quarters.periods.iter().map(|p| p.period.as_str()).collect();
        assert_eq!(labels, ["2025-Q1", "2025-Q2"]);

        let err = app.scoring().get_cohort_retention_report(pb::GetCohortRetentionReportRequest { months: 121, ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["months".to_owned()]));
        let err = app.scoring().get_churn_rate_report(pb::GetChurnRateReportRequest { start_time: midnight("2025-05-01"), end_time: midnight("2025-03-01"), period: 0 }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["end_time"]);
        let err = app.scoring().get_churn_rate_report(pb::GetChurnRateReportRequest { period: 99, ..Default::default() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["period"]);
        let err = app.scoring().get_churn_rate_report(pb::GetChurnRateReportRequest { start_time: midnight("1990-01-01"), end_time: midnight("2025-01-01"), period: common::Period::Day as i32 }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["period"], "too many periods");
    }

    async fn product_distribution_groups_region_category_and_period(app: TestApp) {
        seed(&app).await;
        let request = pb::GetProductDistributionReportRequest {
            start_time: midnight("2025-01-01"),
            end_time: midnight("2025-04-01"),
            period: common::Period::Month as i32,
            by_channel: false,
        };
        // The rollup follows the feed: wait until it has all seven transactions.
        let all_time = pb::GetProductDistributionReportRequest {
            start_time: midnight("2024-01-01"),
            end_time: midnight("2026-01-01"),
            period: common::Period::Year as i32,
            by_channel: false,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let yearly = loop {
            let r = app.scoring().get_product_distribution_report(all_time).await.unwrap().into_inner();
            if r.rows.iter().map(|r| r.transactions).sum::<i64>() == 7 {
                break r;
            }
            assert!(tokio::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let report = app.scoring().get_product_distribution_report(request).await.unwrap().into_inner();
        let rows: Vec<(&str, &str, &str, i64, i64, i64, i64)> = report
            .rows
            .iter()
            .map(|r| {
                let m = r.revenue.as_ref().unwrap();
                assert_eq!(m.currency_code, "EUR");
                (r.period.as_str(), r.region.as_str(), r.category.as_str(), r.transactions, r.customers, r.quantity, m.units)
            })
            .collect();
        assert_eq!(rows, [
            ("2025-01", "East", "books", 3, 2, 4, 30),
            ("2025-02", "East", "toys", 1, 1, 3, 10),
            ("2025-02", "West", "toys", 1, 1, 1, 10),
            ("2025-03", "West", "toys", 1, 1, 1, 10),
        ]);
        let books_2025 = yearly.rows.iter().find(|r| r.period == "2025" && r.category == "books").unwrap();
        assert_eq!((books_2025.transactions, books_2025.customers), (3, 2));
        assert!(yearly.rows.iter().any(|r| r.period == "2024" && r.customers == 1));
        assert!(report.rows.iter().chain(&yearly.rows).all(|r| r.channel.is_empty()), "channels only when asked");

        // By channel: January's books split in two (customer a bought in
        // both channels), and a transaction without one counts under "".
        let by_channel = pb::GetProductDistributionReportRequest { by_channel: true, ..request };
        let report = app.scoring().get_product_distribution_report(by_channel).await.unwrap().into_inner();
        // [period, region, category, channel], [transactions, customers, units, revenue]
        let rows: Vec<([&str; 4], [i64; 4])> = report
            .rows
            .iter()
            .map(|r| {
                let revenue = r.revenue.as_ref().unwrap().units;
                ([r.period.as_str(), &r.region, &r.category, &r.channel], [r.transactions, r.customers, r.quantity, revenue])
            })
            .collect();
        assert_eq!(rows, [
            (["2025-01", "East", "books", "store"], [1, 1, 2, 10]),
            (["2025-01", "East", "books", "web"], [2, 2, 2, 20]),
            (["2025-02", "East", "toys", "app"], [1, 1, 3, 10]),
            (["2025-02", "West", "toys", ""], [1, 1, 1, 10]),
            (["2025-03", "West", "toys", "web"], [1, 1, 1, 10]),
        ]);
        let err = app.scoring().get_product_distribution_report(pb::GetProductDistributionReportRequest { period: -1, ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["period".to_owned()]));
    }
}
