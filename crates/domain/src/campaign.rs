//! Campaign arithmetic: deterministic arm assignment, the campaign state
//! machine, and uplift with its confidence interval.

use crate::ApiError;

/// Which part of the frozen audience a customer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    Treatment,
    Control,
}

/// A stable 64-bit hash of (campaign id, customer id): FNV-1a, then the
/// splitmix64 finaliser so that nearby ids spread over the whole range. It
/// never changes between versions, so an assignment can be recomputed.
pub fn assignment_hash(campaign_id: &str, customer_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in campaign_id
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(customer_id.bytes())
    {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The arm of `customer_id` in `campaign_id`: control with probability
/// `control_fraction`, decided by [`assignment_hash`] alone.
pub fn assign_arm(campaign_id: &str, customer_id: &str, control_fraction: f64) -> Arm {
    // The top 53 bits as a uniform number in [0, 1).
    let u = (assignment_hash(campaign_id, customer_id) >> 11) as f64 / (1u64 << 53) as f64;
    if u < control_fraction {
        Arm::Control
    } else {
        Arm::Treatment
    }
}

/// Campaign lifecycle: DRAFT -> LAUNCHED -> COMPLETED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignState {
    Draft,
    Launched,
    Completed,
}

impl CampaignState {
    pub fn name(self) -> &'static str {
        match self {
            CampaignState::Draft => "DRAFT",
            CampaignState::Launched => "LAUNCHED",
            CampaignState::Completed => "COMPLETED",
        }
    }

    /// `self -> to`, or FAILED_PRECONDITION naming both states.
    pub fn transition(self, to: CampaignState) -> Result<CampaignState, ApiError> {
        match (self, to) {
            (CampaignState::Draft, CampaignState::Launched)
            | (CampaignState::Launched, CampaignState::Completed) => Ok(to),
            _ => Err(ApiError::failed_precondition(
                "ILLEGAL_CAMPAIGN_TRANSITION",
                format!(
                    "a {} campaign cannot become {} (DRAFT -> LAUNCHED -> COMPLETED)",
                    self.name(),
                    to.name()
                ),
            )),
        }
    }
}

/// One arm's figures. Revenue is in nanos of the campaign currency.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmFigures {
    pub audience: i64,
    pub converted: i64,
    pub revenue_nanos: i128,
}

impl ArmFigures {
    pub fn conversion_rate(&self) -> f64 {
        if self.audience == 0 {
            0.0
        } else {
            self.converted as f64 / self.audience as f64
        }
    }
}

/// Uplift of treatment over control.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Uplift {
    /// conversion(treatment) - conversion(control).
    pub absolute: f64,
    /// 95% interval, two-proportion normal approximation (unpooled).
    pub ci_low: f64,
    pub ci_high: f64,
    /// absolute / conversion(control); 0 when the control converted nobody.
    pub relative: f64,
    /// (revenue per treated - revenue per control customer) x treated customers.
    pub incremental_revenue_nanos: i128,
}

/// z for a two-sided 95% interval.
const Z_95: f64 = 1.959_963_984_540_054;

pub fn uplift(treatment: &ArmFigures, control: &ArmFigures) -> Uplift {
    let (pt, pc) = (treatment.conversion_rate(), control.conversion_rate());
    let absolute = pt - pc;
    let var = |p: f64, n: i64| if n > 0 { p * (1.0 - p) / n as f64 } else { 0.0 };
    let se = (var(pt, treatment.audience) + var(pc, control.audience)).sqrt();
    let per = |f: &ArmFigures| {
        if f.audience == 0 {
            0.0
        } else {
            f.revenue_nanos as f64 / f.audience as f64
        }
    };
    let incremental = (per(treatment) - per(control)) * treatment.audience as f64;
    Uplift {
        absolute,
        ci_low: absolute - Z_95 * se,
        ci_high: absolute + Z_95 * se,
        relative: if pc > 0.0 { absolute / pc } else { 0.0 },
        incremental_revenue_nanos: incremental.round() as i128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_deterministic_and_close_to_the_fraction() {
        let n = 100_000;
        let control = (0..n)
            .filter(|i| assign_arm("cmp-1", &format!("cust-{i}"), 0.2) == Arm::Control)
            .count();
        // 0.2 +- 4 standard errors (0.00126 each).
        let share = control as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.0051, "{share}");
        assert_eq!(
            assign_arm("cmp-1", "cust-7", 0.5),
            assign_arm("cmp-1", "cust-7", 0.5)
        );
        // Another campaign shuffles the same customers differently.
        let same = (0..1_000)
            .filter(|i| {
                let id = format!("cust-{i}");
                assign_arm("a", &id, 0.5) == assign_arm("b", &id, 0.5)
            })
            .count();
        assert!((400..600).contains(&same), "{same}");
        assert_eq!(assign_arm("x", "y", 0.0), Arm::Treatment);
    }

    #[test]
    fn states_move_forward_only() {
        use CampaignState::*;
        assert_eq!(Draft.transition(Launched).unwrap(), Launched);
        assert_eq!(Launched.transition(Completed).unwrap(), Completed);
        for (from, to) in [
            (Draft, Completed),
            (Launched, Launched),
            (Completed, Launched),
            (Completed, Completed),
            (Launched, Draft),
        ] {
            let e = from.transition(to).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::FailedPrecondition);
        }
    }

    #[test]
    fn uplift_matches_a_hand_computation() {
        // 1000 treated, 120 converted; 250 control, 20 converted.
        let t = ArmFigures {
            audience: 1000,
            converted: 120,
            revenue_nanos: 6_000 * 1_000_000_000,
        };
        let c = ArmFigures {
            audience: 250,
            converted: 20,
            revenue_nanos: 1_000 * 1_000_000_000,
        };
        let u = uplift(&t, &c);
        assert!((u.absolute - 0.04).abs() < 1e-12);
        let se = (0.12f64 * 0.88 / 1000.0 + 0.08 * 0.92 / 250.0).sqrt();
        assert!((u.ci_low - (0.04 - 1.959_964 * se)).abs() < 1e-6);
        assert!((u.ci_high - (0.04 + 1.959_964 * se)).abs() < 1e-6);
        assert!((u.relative - 0.5).abs() < 1e-12);
        // (6 - 4) per customer x 1000 treated = 2000 units.
        assert_eq!(u.incremental_revenue_nanos, 2_000 * 1_000_000_000);
        assert_eq!(
            uplift(&ArmFigures::default(), &ArmFigures::default()),
            Uplift::default()
        );
    }
}
