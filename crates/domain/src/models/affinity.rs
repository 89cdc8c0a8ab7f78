//! Category affinity for cross-sell: support, confidence and lift between
//! categories over customers' purchase histories (each customer counts once
//! per category).

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct AffinityRule {
    pub from: String,
    pub to: String,
    /// Share of customers who bought both.
    pub support: f64,
    /// P(bought `to` | bought `from`).
    pub confidence: f64,
    /// confidence / P(bought `to`).
    pub lift: f64,
}

/// Pair counts over customers' category sets.
#[derive(Debug, Clone, Default)]
pub struct Affinity {
    categories: Vec<String>,
    customers: u64,
    single: Vec<u64>,
    pairs: HashMap<(usize, usize), u64>,
}

impl Affinity {
    /// `baskets`: for each customer, the categories they bought (any order, repeats allowed).
    pub fn from_baskets<'a, I, B>(baskets: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: IntoIterator<Item = &'a str>,
    {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut a = Affinity::default();
        for basket in baskets {
            let mut ids: Vec<usize> = basket
                .into_iter()
                .map(|c| {
                    let next = index.len();
                    *index.entry(c.to_owned()).or_insert_with(|| {
                        a.categories.push(c.to_owned());
                        a.single.push(0);
                        next
                    })
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            a.customers += 1;
            for (k, &i) in ids.iter().enumerate() {
                a.single[i] += 1;
                for &j in &ids[k + 1..] {
                    *a.pairs.entry((i, j)).or_default() += 1;
                }
            }
        }
        a
    }

    pub fn customers(&self) -> u64 {
        self.customers
    }

    /// Every directed rule with at least `min_support`, by lift descending.
    pub fn rules(&self, min_support: f64) -> Vec<AffinityRule> {
        let n = self.customers.max(1) as f64;
        let mut out = Vec::new();
        for (&(i, j), &both) in &self.pairs {
            let support = both as f64 / n;
            if support < min_support {
                continue;
            }
            for (from, to) in [(i, j), (j, i)] {
                let confidence = both as f64 / self.single[from] as f64;
                let lift = confidence / (self.single[to] as f64 / n);
                out.push(AffinityRule {
                    from: self.categories[from].clone(),
                    to: self.categories[to].clone(),
                    support,
                    confidence,
                    lift,
                });
            }
        }
        out.sort_by(|a, b| {
            b.lift
                .total_cmp(&a.lift)
                .then(a.from.cmp(&b.from))
                .then(a.to.cmp(&b.to))
        });
        out
    }

    /// For a customer who bought `bought`: the best rule into each category
    /// they have not bought, by lift, at most `k`.
    pub fn suggest(&self, bought: &[&str], min_support: f64, k: usize) -> Vec<AffinityRule> {
        let mut best: HashMap<String, AffinityRule> = HashMap::new();
        for rule in self.rules(min_support) {
            if bought.contains(&rule.from.as_str()) && !bought.contains(&rule.to.as_str()) {
                best.entry(rule.to.clone()).or_insert(rule);
            }
        }
        let mut out: Vec<AffinityRule> = best.into_values().collect();
        out.sort_by(|a, b| b.lift.total_cmp(&a.lift).then(a.to.cmp(&b.to)));
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_confidence_and_lift() {
        let baskets: Vec<Vec<&str>> = vec![
            vec!["books", "toys"],
            vec!["books", "toys", "home"],
            vec!["books"],
            vec!["home"],
        ];
        let a = Affinity::from_baskets(baskets.iter().map(|b| b.iter().copied()));
        let rules = a.rules(0.0);
        let books_toys = rules
            .iter()
            .find(|r| r.from == "books" && r.to == "toys")
            .unwrap();
        assert!((books_toys.support - 0.5).abs() < 1e-12);
        assert!((books_toys.confidence - 2.0 / 3.0).abs() < 1e-12);
        assert!((books_toys.lift - (2.0 / 3.0) / 0.5).abs() < 1e-12);
        let s = a.suggest(&["toys"], 0.0, 5);
        assert_eq!(s[0].to, "books");
        assert!(s.iter().all(|r| r.to != "toys"));
    }
}
