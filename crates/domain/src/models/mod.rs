//! The analytics models, exactly as `models.md` defines them: purchase
//! summaries, RFM, BG/NBD, Gamma-Gamma, CLV, churn, tiers, quadrants,
//! lifecycle, loyalty, profitability and category affinity.

pub mod affinity;
pub mod bgnbd;
pub mod gamma_gamma;
pub mod optimize;
pub mod reports;
pub mod rfm;
pub mod scores;
pub mod special;
pub mod summary;

/// Shape parameters (BG/NBD r, a, b; Gamma-Gamma p, q) are fitted within
/// [`SHAPE_MIN`, `SHAPE_MAX`]. Data without heterogeneity in some respect
/// (every customer buying at the same rate, dropping out with the same
/// probability, or spending the same on average) has its likelihood rise
/// without bound as a shape parameter runs to infinity, or to zero when no
/// one drops out: the limit is a simpler model, and a shape held at the
/// bound stands in for it (a Gamma of shape 10^6 has a relative spread of
/// 0.1%). Scale parameters (α, v) are free.
pub const SHAPE_MIN: f64 = 1e-8;
/// See [`SHAPE_MIN`].
pub const SHAPE_MAX: f64 = 1e6;

/// The bounds of a shape parameter fitted on its logarithm.
pub(crate) fn log_shape_bounds() -> Option<(f64, f64)> {
    Some((SHAPE_MIN.ln(), SHAPE_MAX.ln()))
}

/// A scale parameter (BG/NBD α, Gamma-Gamma v) beyond e^±100 means the
/// fit went wrong: with the shapes bounded it has a finite optimum for any
/// data with a repeat buyer. Not tighter: α is r over a daily rate, v about
/// q·mean/p, so with a shape at its bound of 10^6, rare buyers or amounts
/// in the millions (dong, rupiah) they are legitimately 10^9 to 10^13.
pub(crate) const MAX_LOG_SCALE: f64 = 100.0;

/// The names of the parameters a fit held at a bound, in parameter order.
pub(crate) fn held_names(names: &[&'static str], held: &[bool]) -> Vec<&'static str> {
    names
        .iter()
        .zip(held)
        .filter_map(|(name, &held)| held.then_some(*name))
        .collect()
}

/// A shape parameter from its fitted logarithm: exactly the bound when the
/// fit held it there (exp(ln 10^6) is 999999.9999999995).
pub(crate) fn shape_from_log(theta: f64, held: bool) -> f64 {
    match (held, theta > 0.0) {
        (true, true) => SHAPE_MAX,
        (true, false) => SHAPE_MIN,
        (false, _) => theta.exp(),
    }
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no customers to fit")]
    NoData,
    #[error("no customer has a repeat purchase; the model cannot be identified")]
    NoRepeatPurchases,
    /// Nobody has a second repeat purchase (frequency 2 or more), so
    /// nothing in the data shows a customer staying after a repeat
    /// purchase: BG/NBD's likelihood then always rises towards "every
    /// repeat buyer leaves right after it" (see `bgnbd::fit`).
    #[error(
        "no customer has more than one repeat purchase, so the dropout rate cannot be estimated (the likelihood keeps rising towards every repeat buyer leaving right after a repeat purchase)"
    )]
    NoSecondRepeatPurchase,
    #[error("invalid customer summary {0}")]
    InvalidRow(String),
    #[error(
        "the optimiser did not converge after {iterations} iterations (last parameters {detail}); the data does not identify the model"
    )]
    NotConverged { iterations: usize, detail: String },
}
