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

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no customers to fit")]
    NoData,
    #[error("no customer has a repeat purchase; the model cannot be identified")]
    NoRepeatPurchases,
    #[error("too few customers to fit")]
    TooFewCustomers,
    #[error("invalid customer summary {0}")]
    InvalidRow(String),
    #[error(
        "the optimiser did not converge after {iterations} iterations (last parameters {detail}); the data does not identify the model"
    )]
    NotConverged { iterations: usize, detail: String },
}
