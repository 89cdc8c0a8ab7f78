//! Times the population-scale model steps (figures for BENCHMARKS.md).
//!
//!     cargo run --release -p patron-domain --example model_bench -- DIR [CUSTOMERS TRANSACTIONS]
//!
//! Writes (once) `DIR/purchases.bin`: TRANSACTIONS records of little-endian
//! (customer u32, day i32, amount_nanos i64, cost_nanos i64), generated
//! deterministically, which `bench/models_reference.py` reads too. Prints
//! one JSON line per step: the median of 5 runs after one warm-up run, in
//! seconds (the warm-up takes the one-off cost of the process's first
//! page faults, which a long-running service pays once).
//!
//! Uses mimalloc, the allocator every Patron process runs with: the steps
//! allocate hundreds of megabytes per run, and how the allocator hands
//! pages back and forth is part of what they cost.

use std::{io::Write, path::Path, time::Instant};

use patron_domain::models::{
    bgnbd::{self, BgNbdRow},
    gamma_gamma::{self, GammaGammaRow},
    rfm::{scores_by_larger, scores_by_smaller},
    summary::{CustomerSummary, Purchase, summarize},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AS_OF_DAY: i32 = 20_000;
const RECORD: usize = 24;

fn generate(customers: usize, transactions: usize) -> Vec<Purchase> {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let spend = Gamma::new(3.0, 15.0).expect("gamma");
    let levels: Vec<f64> = (0..customers).map(|_| spend.sample(&mut rng)).collect();
    let starts: Vec<i32> = (0..customers)
        .map(|_| AS_OF_DAY - rng.random_range(30..730))
        .collect();
    // Heavy-tailed activity: a few customers buy a lot, many once.
    let activity = Gamma::new(0.6, 1.0).expect("gamma");
    let weights: Vec<f64> = (0..customers)
        .map(|_| activity.sample(&mut rng) + 0.05)
        .collect();
    let total: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(transactions);
    for c in 0..customers {
        let n = if out.len() >= transactions {
            0
        } else {
            1 + ((weights[c] / total) * (transactions - customers) as f64) as usize
        };
        for k in 0..n {
            let day = if k == 0 {
                starts[c]
            } else {
                rng.random_range(starts[c]..=AS_OF_DAY)
            };
            let amount = (levels[c] * rng.random_range(0.5..1.5) * 1e9) as i64;
            out.push(Purchase {
                customer: c as u32,
                day,
                amount_nanos: amount,
                cost_nanos: amount / 2,
            });
        }
    }
    while out.len() < transactions {
        let c = rng.random_range(0..customers);
        out.push(Purchase {
            customer: c as u32,
            day: rng.random_range(starts[c]..=AS_OF_DAY),
            amount_nanos: 20_000_000_000,
            cost_nanos: 0,
        });
    }
    out.truncate(transactions);
    out
}

fn load_or_generate(dir: &Path, customers: usize, transactions: usize) -> Vec<Purchase> {
    let path = dir.join("purchases.bin");
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == transactions * RECORD
    {
        return bytes
            .chunks_exact(RECORD)
            .map(|r| Purchase {
                customer: u32::from_le_bytes(r[0..4].try_into().unwrap()),
                day: i32::from_le_bytes(r[4..8].try_into().unwrap()),
                amount_nanos: i64::from_le_bytes(r[8..16].try_into().unwrap()),
                cost_nanos: i64::from_le_bytes(r[16..24].try_into().unwrap()),
            })
            .collect();
    }
    let purchases = generate(customers, transactions);
    std::fs::create_dir_all(dir).expect("bench dir");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for p in &purchases {
        file.write_all(&p.customer.to_le_bytes()).unwrap();
        file.write_all(&p.day.to_le_bytes()).unwrap();
        file.write_all(&p.amount_nanos.to_le_bytes()).unwrap();
        file.write_all(&p.cost_nanos.to_le_bytes()).unwrap();
    }
    purchases
}

fn median_of_5<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    drop(f());
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[2], last.expect("ran"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("/tmp/patron-bench", String::as_str)).to_path_buf();
    let customers: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let transactions: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let purchases = load_or_generate(&dir, customers, transactions);

    let (secs, summaries) = median_of_5(|| {
        let summaries = summarize(customers, &purchases, AS_OF_DAY);
        let recency: Vec<i64> = summaries
            .par_iter()
            .map(|s| s.recency_days(AS_OF_DAY))
            .collect();
        let frequency: Vec<u32> = summaries.par_iter().map(|s| s.transactions).collect();
        let monetary: Vec<i128> = summaries.par_iter().map(|s| s.total_nanos).collect();
        let (r, (f, m)) = rayon::join(
            || scores_by_larger(&recency),
            || {
                rayon::join(
                    || scores_by_smaller(&frequency),
                    || scores_by_smaller(&monetary),
                )
            },
        );
        assert_eq!(r.len() + f.len() + m.len(), 3 * summaries.len());
        summaries
    });
    println!(
        "{{\"step\": \"rfm_and_summary\", \"seconds\": {secs:.4}, \"customers\": {}, \"transactions\": {transactions}}}",
        summaries.len()
    );

    let rows: Vec<BgNbdRow> = summaries.iter().map(CustomerSummary::bg_nbd_row).collect();
    let (secs, fit) = median_of_5(|| bgnbd::fit(&rows).expect("bg/nbd fit"));
    let p = fit.params;
    println!(
        "{{\"step\": \"bgnbd_fit\", \"seconds\": {secs:.4}, \"customers\": {}, \"r\": {:.6}, \"alpha\": {:.6}, \"a\": {:.6}, \"b\": {:.6}, \"iterations\": {}}}",
        rows.len(),
        p.r,
        p.alpha,
        p.a,
        p.b,
        fit.iterations
    );

    let gg_rows: Vec<GammaGammaRow> = summaries
        .iter()
        .filter(|s| s.x > 0)
        .map(|s| GammaGammaRow {
            x: s.x,
            mean_value: s.repeat_mean_value,
            weight: 1.0,
        })
        .collect();
    let (secs, gg) = median_of_5(|| gamma_gamma::fit(&gg_rows).expect("gamma-gamma fit"));
    println!(
        "{{\"step\": \"gamma_gamma_fit\", \"seconds\": {secs:.4}, \"customers\": {}, \"p\": {:.6}, \"q\": {:.6}, \"v\": {:.6}}}",
        gg_rows.len(),
        gg.params.p,
        gg.params.q,
        gg.params.v
    );

    let (secs, predictions) = median_of_5(|| {
        summaries
            .par_iter()
            .map(|s| {
                let alive = p.p_alive(s.x, s.t_x, s.t);
                let e = p
                    .conditional_expected_purchases(365.0, s.x, s.t_x, s.t)
                    .expect("E[purchases] converges");
                let value = gg
                    .params
                    .conditional_expected_value(s.x, s.repeat_mean_value);
                (alive, e, value)
            })
            .collect::<Vec<_>>()
    });
    // Sums the reference script compares with lifetimes' predictions.
    let alive: f64 = predictions.iter().map(|p| p.0).sum();
    let purchases: f64 = predictions.iter().map(|p| p.1).sum();
    println!(
        "{{\"step\": \"predictions\", \"seconds\": {secs:.4}, \"customers\": {}, \"sum_p_alive\": {alive:.6}, \"sum_expected_purchases\": {purchases:.6}}}",
        predictions.len()
    );
}
