//! Survey responses (NPS, CSAT), complaints and their lifecycle, and the
//! arithmetic of the satisfaction reports.

use chrono::{DateTime, Utc};

use crate::{ApiError, Violations, activity::check_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyKind {
    /// 0..=10
    Nps,
    /// 1..=5
    Csat,
}

impl SurveyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SurveyKind::Nps => "nps",
            SurveyKind::Csat => "csat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nps" => Some(SurveyKind::Nps),
            "csat" => Some(SurveyKind::Csat),
            _ => None,
        }
    }

    pub fn range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            SurveyKind::Nps => 0..=10,
            SurveyKind::Csat => 1..=5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyResponse {
    pub id: String,
    pub customer_id: String,
    pub kind: SurveyKind,
    pub score: i32,
    /// Free text: personal data, removed on erasure.
    pub comment: String,
    pub product_id: String,
    pub region: String,
    pub channel: String,
    pub occurred_at: DateTime<Utc>,
}

impl SurveyResponse {
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        check_id(&mut v, "id", &self.id);
        check_id(&mut v, "customer_id", &self.customer_id);
        let range = self.kind.range();
        if !range.contains(&self.score) {
            v.add(
                "score",
                format!(
                    "must be {} to {} for {}",
                    range.start(),
                    range.end(),
                    self.kind.as_str().to_uppercase()
                ),
            );
        }
        if self.occurred_at > now + chrono::Duration::days(1) {
            v.add("occurred_at", "must not be in the future");
        }
        if self.comment.len() > 10_000 {
            v.add("comment", "must be at most 10,000 bytes");
        }
        for (field, value) in [
            ("product_id", &self.product_id),
            ("region", &self.region),
            ("channel", &self.channel),
        ] {
            if value.len() > 200 || value.chars().any(char::is_control) {
                v.add(field, "must be at most 200 printable bytes");
            }
        }
        v.finish().map(|()| self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComplaintStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

impl ComplaintStatus {
    pub const ALL: [ComplaintStatus; 4] = [
        ComplaintStatus::Open,
        ComplaintStatus::InProgress,
        ComplaintStatus::Resolved,
        ComplaintStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComplaintStatus::Open => "open",
            ComplaintStatus::InProgress => "in_progress",
            ComplaintStatus::Resolved => "resolved",
            ComplaintStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        matches!(self, ComplaintStatus::Open | ComplaintStatus::InProgress)
    }

    /// OPEN -> IN_PROGRESS -> RESOLVED -> CLOSED, and RESOLVED -> IN_PROGRESS
    /// (reopen). Staying in the same status is allowed.
    pub fn can_become(self, next: ComplaintStatus) -> bool {
        use ComplaintStatus::*;
        self == next
            || matches!(
                (self, next),
                (Open, InProgress)
                    | (InProgress, Resolved)
                    | (Resolved, Closed)
                    | (Resolved, InProgress)
            )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Severity {
    #[default]
    Unspecified,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Unspecified,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unspecified => "",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub product_id: String,
    pub region: String,
    pub channel: String,
    pub assignee: String,
    pub severity: Severity,
    pub status: ComplaintStatus,
    pub description: String,
    pub resolution: String,
    pub filed_time: DateTime<Utc>,
    pub first_response_time: Option<DateTime<Utc>>,
    pub resolved_time: Option<DateTime<Utc>>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
}

impl Complaint {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// Field rules and time order; paths relative to the complaint.
    pub fn validate(self, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let mut v = Violations::new();
        check_id(&mut v, "customer_id", &self.customer_id);
        for (field, value) in [
            ("type", &self.kind),
            ("product_id", &self.product_id),
            ("region", &self.region),
            ("channel", &self.channel),
            ("assignee", &self.assignee),
        ] {
            if value.len() > 200 || value.chars().any(char::is_control) {
                v.add(field, "must be at most 200 printable bytes");
            }
        }
        if self.kind.trim().is_empty() {
            v.add("type", "is required");
        }
        for (field, value) in [
            ("description", &self.description),
            ("resolution", &self.resolution),
        ] {
            if value.len() > 20_000 {
                v.add(field, "must be at most 20,000 bytes");
            }
        }
        let late = now + chrono::Duration::minutes(5);
        if self.filed_time > late {
            v.add("filed_time", "must not be in the future");
        }
        if let Some(t) = self.first_response_time
            && t < self.filed_time
        {
            v.add("first_response_time", "must not be before filed_time");
        }
        if let Some(t) = self.resolved_time {
            if t < self.filed_time {
                v.add("resolved_time", "must not be before filed_time");
            } else if t > late {
                v.add("resolved_time", "must not be in the future");
            }
        }
        v.finish().map(|()| self)
    }
}

/// Counts of an NPS population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NpsCounts {
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
}

impl NpsCounts {
    pub fn add(&mut self, score: i32) {
        match score {
            9..=10 => self.promoters += 1,
            7..=8 => self.passives += 1,
            _ => self.detractors += 1,
        }
    }

    pub fn responses(&self) -> i64 {
        self.promoters + self.passives + self.detractors
    }

    /// 100 × (promoters − detractors) / responses; 0 without responses.
    pub fn nps(&self) -> f64 {
        let n = self.responses();
        if n == 0 {
            0.0
        } else {
            100.0 * (self.promoters - self.detractors) as f64 / n as f64
        }
    }
}

/// The q-quantile (0..=1) by linear interpolation between order statistics;
/// `None` for no data. Sorts `values`.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nps_arithmetic() {
        let mut c = NpsCounts::default();
        for s in [10, 9, 9, 8, 7, 6, 0, 10] {
            c.add(s);
        }
        assert_eq!((c.promoters, c.passives, c.detractors), (4, 2, 2));
        assert!((c.nps() - 25.0).abs() < 1e-12);
        assert_eq!(NpsCounts::default().nps(), 0.0);
    }

    #[test]
    fn state_machine() {
        use ComplaintStatus::*;
        for (from, to, ok) in [
            (Open, InProgress, true),
            (InProgress, Resolved, true),
            (Resolved, Closed, true),
            (Resolved, InProgress, true),
            (Open, Resolved, false),
            (Open, Closed, false),
            (Closed, InProgress, false),
            (InProgress, Open, false),
            (Closed, Closed, true),
        ] {
            assert_eq!(from.can_become(to), ok, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn quantiles() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), Some(2.5));
        assert_eq!(quantile(&mut v, 0.9), Some(3.7));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
