//! The feedback service end to end, on every backend.

use std::time::Duration;

use patron_tests::{
    TestApp, backend_tests,
    pb::{feedback as pb, profile as profile_pb},
    violated_fields,
};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

const DAY: i64 = 86_400;
const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

async fn customers(app: &TestApp, n: usize) -> Vec<String> {
    let batch = (0..n)
        .map(|i| profile_pb::Customer {
            external_id: format!("fb-{i}"),
            display_name: format!("C {i}"),
            ..Default::default()
        })
        .collect();
    app.profile()
        .upsert_customers(profile_pb::UpsertCustomersRequest { customers: batch })
        .await
        .unwrap()
        .into_inner()
        .customers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn nps(id: &str, customer: &str, score: i32, product: &str, at: i64) -> pb::SurveyResponse {
    pb::SurveyResponse {
        id: id.into(),
        customer_id: customer.into(),
        kind: pb::SurveyKind::Nps as i32,
        score,
        comment: format!("comment {id}"),
        product_id: product.into(),
        region: "East".into(),
        channel: "web".into(),
        occurred_at: ts(at),
    }
}

backend_tests! {
    async fn surveys_are_validated_idempotent_and_reported(app: TestApp) {
        let ids = customers(&app, 20).await;
        let mut fb = app.feedback();
        // Deterministic scores; the expected report is computed here, independently.
        let products = ["p1", "p2", "p3"];
        let mut responses = Vec::new();
        for i in 0..150usize {
            let score = ((i * 7) % 11) as i32;
            responses.push(nps(&format!("r{i}"), &ids[i % ids.len()], score, products[i % 3], BASE + (i as i64) * 3_600));
        }
        for i in 0..40usize {
            responses.push(pb::SurveyResponse {
                kind: pb::SurveyKind::Csat as i32,
                score: 1 + (i % 5) as i32,
                ..nps(&format!("c{i}"), &ids[i % ids.len()], 0, products[i % 3], BASE + (i as i64) * 3_600)
            });
        }
        let r = fb.submit_survey_responses(pb::SubmitSurveyResponsesRequest { responses: responses.clone() }).await.unwrap().into_inner();
        assert_eq!((r.accepted, r.duplicates), (190, 0));
        let r = fb.submit_survey_responses(pb::SubmitSurveyResponsesRequest { responses: responses[..10].to_vec() }).await.unwrap().into_inner();
        assert_eq!((r.accepted, r.duplicates), (0, 10));

        let expect = |filter: &dyn Fn(usize) -> bool| {
            let (mut p, mut s, mut d) = (0i64, 0i64, 0i64);
            for i in (0..150usize).filter(|i| filter(*i)) {
                match (i * 7) % 11 { 9..=10 => p += 1, 7..=8 => s += 1, _ => d += 1 }
            }
            (p, s, d, 100.0 * (p - d) as f64 / (p + s + d) as f64)
        };
        let report = fb.get_nps_report(pb::GetNpsReportRequest { group_by: "product_id".into(), ..Default::default() }).await.unwrap().into_inner();
        let (p, s, d, score) = expect(&|_| true);
        assert_eq!((report.promoters, report.passives, report.detractors, report.responses), (p, s, d, 150));
        assert!((report.nps - score).abs() < 1e-9);
        assert_eq!(report.groups.len(), 3);
        for (k, g) in report.groups.iter().enumerate() {
            let (p, s, d, score) = expect(&|i| i % 3 == k);
            assert_eq!(g.key, products[k]);
            assert_eq!((g.promoters, g.passives, g.detractors), (p, s, d));
            assert!((g.nps - score).abs() < 1e-9);
        }

        // [start, end) windows.
        let window = fb
            .get_nps_report(pb::GetNpsReportRequest { start_time: ts(BASE + 10 * 3_600), end_time: ts(BASE + 20 * 3_600), group_by: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(window.responses, 10);
        // Partial day, a whole day, partial day: rollup and raw rows combined.
        let spanning = fb
            .get_nps_report(pb::GetNpsReportRequest { start_time: ts(BASE + 5 * 3_600), end_time: ts(BASE + 53 * 3_600), group_by: "product_id".into() })
            .await
            .unwrap()
            .into_inner();
        let (p, s, d, score) = expect(&|i| (5..53).contains(&i));
        assert_eq!((spanning.promoters, spanning.passives, spanning.detractors, spanning.responses), (p, s, d, 48));
        assert!((spanning.nps - score).abs() < 1e-9);
        assert_eq!(spanning.groups.iter().map(|g| g.responses).sum::<i64>(), 48);

        let csat = fb.get_csat_report(pb::GetCsatReportRequest::default()).await.unwrap().into_inner();
        assert_eq!((csat.responses, csat.satisfied), (40, 16));
        assert!((csat.csat - 40.0).abs() < 1e-9 && (csat.mean_score - 3.0).abs() < 1e-9);

        let trend = fb.get_nps_trend(pb::GetNpsTrendRequest { period: patron_tests::pb::common::Period::Week as i32, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(trend.points.iter().map(|p| p.responses).sum::<i64>(), 150);

        // Every bad input class names its field.
        let bad = vec![
            pb::SurveyResponse { score: 11, ..nps("b0", &ids[0], 0, "p1", BASE) },
            pb::SurveyResponse { kind: pb::SurveyKind::Csat as i32, score: 0, ..nps("b1", &ids[0], 0, "p1", BASE) },
            pb::SurveyResponse { kind: 0, ..nps("b2", &ids[0], 5, "p1", BASE) },
            pb::SurveyResponse { occurred_at: None, ..nps("b3", &ids[0], 5, "p1", BASE) },
            pb::SurveyResponse { id: String::new(), ..nps("b4", &ids[0], 5, "p1", BASE) },
        ];
        let err = fb.submit_survey_responses(pb::SubmitSurveyResponsesRequest { responses: bad }).await.unwrap_err();
        assert_eq!(
            violated_fields(&err),
            ["responses[0].score", "responses[1].score", "responses[2].kind", "responses[3].occurred_at", "responses[4].id"]
        );
        let err = fb
            .submit_survey_responses(pb::SubmitSurveyResponsesRequest { responses: vec![nps("u0", "no-such-customer", 5, "p1", BASE)] })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["responses[0].customer_id"]);
        let err = fb.get_nps_report(pb::GetNpsReportRequest { group_by: "shoe_size".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["group_by"]);
        let err = fb
            .get_nps_report(pb::GetNpsReportRequest { start_time: ts(BASE), end_time: ts(BASE), group_by: String::new() })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["end_time"]);

        let summary = fb
            .get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest { customer_id: ids[0].clone() })
            .await
            .unwrap()
            .into_inner();
        // Customer 0 answered NPS at i = 0, 20, ..., 140: the latest is i = 140.
        assert_eq!(summary.latest_nps, Some((140 * 7) % 11));
        assert_eq!(summary.csat_responses, 2);
        // A customer without feedback has an empty summary; no customer, none.
        let quiet = app
            .profile()
            .create_customer(profile_pb::CreateCustomerRequest { customer: Some(profile_pb::Customer { external_id: "fb-quiet".into(), ..Default::default() }), request_id: String::new() })
            .await
            .unwrap()
            .into_inner()
            .id;
        let summary = fb.get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest { customer_id: quiet.clone() }).await.unwrap().into_inner();
        assert_eq!(summary, pb::CustomerFeedbackSummary { customer_id: quiet, ..Default::default() });
        let err = fb.get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest { customer_id: "nobody".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }

    async fn complaints_follow_their_lifecycle(app: TestApp) {
        let ids = customers(&app, 3).await;
        let mut fb = app.feedback();
        let new = |customer: &str| pb::Complaint {
            customer_id: customer.into(),
            r#type: "delivery".into(),
            product_id: "p1".into(),
            region: "East".into(),
            description: "parcel lost".into(),
            ..Default::default()
        };
        let filed = fb.file_complaint(pb::FileComplaintRequest { complaint: Some(new(&ids[0])), request_id: "k1".into() }).await.unwrap().into_inner();
        assert_eq!(filed.status, pb::ComplaintStatus::Open as i32);
        let retry = fb.file_complaint(pb::FileComplaintRequest { complaint: Some(new(&ids[0])), request_id: "k1".into() }).await.unwrap().into_inner();
        assert_eq!(retry.id, filed.id, "a retried request_id returns the first complaint");

        let update = |c: pb::Complaint, paths: &[&str]| pb::UpdateComplaintRequest {
            complaint: Some(c),
            update_mask: Some(FieldMask { paths: paths.iter().map(|p| (*p).into()).collect() }),
        };
        let with = |status: pb::ComplaintStatus, etag: &str| pb::Complaint { id: filed.id.clone(), status: status as i32, etag: etag.into(), assignee: "ann".into(), ..Default::default() };

        let err = fb.update_complaint(update(with(pb::ComplaintStatus::Closed, ""), &["status"])).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "OPEN -> CLOSED is illegal");

        let working = fb.update_complaint(update(with(pb::ComplaintStatus::InProgress, &filed.etag), &["status", "assignee"])).await.unwrap().into_inner();
        assert_eq!(working.assignee, "ann");
        assert!(working.first_response_time.is_some());
        let err = fb.update_complaint(update(with(pb::ComplaintStatus::Resolved, &filed.etag), &["status"])).await.unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "stale etag");
        let resolved = fb.update_complaint(update(with(pb::ComplaintStatus::Resolved, ""), &["status"])).await.unwrap().into_inner();
        assert!(resolved.resolved_time.is_some());
        let reopened = fb.update_complaint(update(with(pb::ComplaintStatus::InProgress, ""), &["status"])).await.unwrap().into_inner();
        assert!(reopened.resolved_time.is_none(), "reopening clears the resolution time");
        let err = fb.update_complaint(update(with(pb::ComplaintStatus::Open, ""), &["status"])).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = fb.update_complaint(update(with(pb::ComplaintStatus::Open, ""), &["filed_time"])).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["update_mask"]);

        // Concurrent updates from one etag: exactly one wins.
        let current = fb.get_complaint(pb::GetComplaintRequest { id: filed.id.clone() }).await.unwrap().into_inner();
        let mut calls = Vec::new();
        for i in 0..6 {
            let mut client = app.feedback();
            let c = pb::Complaint { id: current.id.clone(), etag: current.etag.clone(), assignee: format!("rep-{i}"), ..Default::default() };
            calls.push(tokio::spawn(async move { client.update_complaint(update(c, &["assignee"])).await }));
        }
        let mut ok = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.code(), Code::Aborted),
            }
        }
        assert_eq!(ok, 1);

        // No mask (AIP-134): the fields sent change, the rest stays; an
        // update that changes nothing keeps the etag.
        let current = fb.get_complaint(pb::GetComplaintRequest { id: filed.id.clone() }).await.unwrap().into_inner();
        let note = pb::Complaint { id: current.id.clone(), resolution: "refund sent".into(), ..Default::default() };
        let noted = fb.update_complaint(pb::UpdateComplaintRequest { complaint: Some(note.clone()), update_mask: None }).await.unwrap().into_inner();
        assert_eq!(noted.resolution, "refund sent");
        assert_eq!((noted.assignee.as_str(), noted.status, noted.description.as_str()), (current.assignee.as_str(), current.status, current.description.as_str()));
        assert_ne!(noted.etag, current.etag);
        let again = fb.update_complaint(pb::UpdateComplaintRequest { complaint: Some(note), update_mask: None }).await.unwrap().into_inner();
        assert_eq!(again.etag, noted.etag, "nothing changed, the etag stays");

        // Imported history: resolution times known, report figures checked.
        let hours = [2i64, 5, 9, 30, 48];
        for (i, h) in hours.iter().enumerate() {
            let c = pb::Complaint {
                status: pb::ComplaintStatus::Closed as i32,
                filed_time: ts(BASE + i as i64 * DAY),
                resolved_time: ts(BASE + i as i64 * DAY + h * 3_600),
                r#type: if i % 2 == 0 { "billing".into() } else { "delivery".into() },
                ..new(&ids[1])
            };
            fb.file_complaint(pb::FileComplaintRequest { complaint: Some(c), request_id: String::new() }).await.unwrap();
        }
        let report = fb
            .get_complaint_report(pb::GetComplaintReportRequest { start_time: ts(BASE), end_time: ts(BASE + 30 * DAY), group_by: "type".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((report.filed, report.resolved), (5, 5));
        assert!((report.median_hours_to_resolve - 9.0).abs() < 1e-9);
        assert!((report.p90_hours_to_resolve - 40.8).abs() < 1e-9, "linear interpolation: {}", report.p90_hours_to_resolve);
        let billing = report.groups.iter().find(|g| g.key == "billing").unwrap();
        assert_eq!(billing.filed, 3);
        assert!((billing.median_hours_to_resolve - 9.0).abs() < 1e-9);
        let open_now: i64 = report.open_backlog.iter().map(|b| b.open).sum();
        assert_eq!(open_now, 1, "the reopened complaint");

        let list = fb.list_complaints(pb::ListComplaintsRequest { filter: "status = closed AND type = \"billing\"".into(), page_size: 2, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(list.total_size, 3);
        assert_eq!(list.complaints.len(), 2);
        let rest = fb
            .list_complaints(pb::ListComplaintsRequest { filter: "status = closed AND type = \"billing\"".into(), page_size: 2, page_token: list.next_page_token, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.complaints.len(), 1);
        let err = fb.list_complaints(pb::ListComplaintsRequest { filter: "status = broken".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["filter"]);

        let err = fb.file_complaint(pb::FileComplaintRequest { complaint: Some(pb::Complaint { r#type: String::new(), ..new("nobody") }), request_id: String::new() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["complaint.type"]);
        let err = fb.file_complaint(pb::FileComplaintRequest { complaint: Some(new("nobody")), request_id: String::new() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["complaint.customer_id"]);
        let err = fb.get_complaint(pb::GetComplaintRequest { id: "nope".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let summary = fb.get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest { customer_id: ids[0].clone() }).await.unwrap().into_inner();
        assert_eq!((summary.open_complaints, summary.total_complaints), (1, 1));
        assert!(summary.oldest_open_complaint_time.is_some());
    }

    async fn erasure_in_profile_reaches_feedback(app: TestApp) {
        let ids = customers(&app, 2).await;
        let mut fb = app.feedback();
        fb.submit_survey_responses(pb::SubmitSurveyResponsesRequest { responses: vec![nps("e1", &ids[0], 3, "p1", BASE), nps("e2", &ids[1], 10, "p1", BASE)] })
            .await
            .unwrap();
        let complaint = fb
            .file_complaint(pb::FileComplaintRequest {
                complaint: Some(pb::Complaint { customer_id: ids[0].clone(), r#type: "service".into(), description: "my address is Main St 1".into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        app.profile().erase_customer(profile_pb::EraseCustomerRequest { id: ids[0].clone(), reason: String::new() }).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let c = fb.get_complaint(pb::GetComplaintRequest { id: complaint.id.clone() }).await.unwrap().into_inner();
            if c.description.is_empty() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "erasure did not reach feedback within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The anonymous score stays in the reports.
        let report = fb.get_nps_report(pb::GetNpsReportRequest::default()).await.unwrap().into_inner();
        assert_eq!((report.responses, report.detractors, report.promoters), (2, 1, 1));
    }
}
