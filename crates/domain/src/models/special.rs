//! Special functions: log-gamma, digamma and the Gauss hypergeometric 2F1.

use std::f64::consts::PI;

const LANCZOS_G: f64 = 7.0;
const LANCZOS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// ln |Γ(x)| (Lanczos, g = 7, n = 9; relative error about 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        (PI / (PI * x).sin().abs()).ln() - ln_gamma(1.0 - x)
    } else {
        let x = x - 1.0;
        let mut a = LANCZOS[0];
        let t = x + LANCZOS_G + 0.5;
        for (i, c) in LANCZOS.iter().enumerate().skip(1) {
            a += c / (x + i as f64);
        }
        0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }
}

/// ln Γ(s + d) − ln Γ(s) for s, d > 0. For large s the two log-gammas
/// are huge and nearly equal (about 1.3e7 at s = 10^6, where a likelihood
/// needs their difference to 1e-10), so there it is taken from Stirling's
/// series directly as a difference:
/// (s − ½)·ln(1 + d/s) + d·ln(s + d) − d + the difference of the tails.
pub fn ln_gamma_ratio(s: f64, d: f64) -> f64 {
    if s < 20.0 {
        return ln_gamma(s + d) - ln_gamma(s);
    }
    // Σ B_2k / (2k (2k−1) z^(2k−1)), k = 1..4; the next term is below
    // 1e-15 for z >= 20.
    let tail = |z: f64| {
        let z2 = z * z;
        (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * z2)) / z2) / z2) / z
    };
    let t = s + d;
    (s - 0.5) * (d / s).ln_1p() + d * t.ln() - d + (tail(t) - tail(s))
}

/// ψ(x) = d/dx ln Γ(x), for x > 0 (recurrence to x >= 10, then the asymptotic series).
pub fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    result + x.ln()
        - 0.5 * inv
        - inv2
            * (1.0 / 12.0
                - inv2
                    * (1.0 / 120.0
                        - inv2
                            * (1.0 / 252.0
                                - inv2
                                    * (1.0 / 240.0
                                        - inv2 * (1.0 / 132.0 - inv2 * (691.0 / 32_760.0))))))
}

/// Gauss hypergeometric function 2F1(a, b; c; z) for 0 <= z < 1 and any c
/// but a non-positive integer (where the series has a pole), by its power
/// series (terms by ratio recurrence, summed until they no longer change
/// the result). `None` if it fails to converge.
///
/// The series needs about as many terms as it takes `z^k` and the growth of
/// `(a)_k (b)_k / (c)_k k!` to fall below 1e-16: callers near z = 1 with
/// large a, b should transform first (see `bgnbd`, which uses Euler's).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) || (c <= 0.0 && c.fract() == 0.0) {
        return None;
    }
    series(a, b, c, z, false).map(|(sum, _)| sum)
}

/// ln 2F1(a, b; c; z) for a, b, c > 0 and 0 <= z < 1, where every term of
/// the series is positive: summed like [`hyp2f1`] but rescaled as it grows,
/// so a sum beyond f64's range still has a logarithm. `None` outside that
/// domain or if it fails to converge.
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(a > 0.0 && b > 0.0 && c > 0.0 && (0.0..1.0).contains(&z)) {
        return None;
    }
    series(a, b, c, z, true).map(|(sum, ln_scale)| ln_scale + sum.ln())
}

/// The power series of 2F1, terms by ratio recurrence, summed until they no
/// longer change the result: (sum, ln of the factor it was divided by),
/// the factor 1 unless `rescale` let it grow past 1e280.
fn series(a: f64, b: f64, c: f64, z: f64, rescale: bool) -> Option<(f64, f64)> {
    const RESCALE: f64 = 1e280;
    let mut ln_scale = 0.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 0..200_000u32 {
        let k = f64::from(k);
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if rescale && sum.abs() > RESCALE {
            sum /= RESCALE;
            term /= RESCALE;
            ln_scale += RESCALE.ln();
        }
        if term.abs() <= 1e-16 * sum.abs() {
            return Some((sum, ln_scale));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        // Γ(n) = (n-1)!
        let mut factorial = 1.0f64;
        for n in 1..30 {
            assert!(close(ln_gamma(n as f64), factorial.ln(), 1e-13), "n={n}");
            factorial *= n as f64;
        }
        assert!(close(ln_gamma(0.5), 0.5 * PI.ln(), 1e-14));
        assert!(close(ln_gamma(1e-3), 6.907_178_885_383_853, 1e-13));
        assert!(close(ln_gamma(1000.5), 5_908.674_175_848_678, 1e-13));
    }

    #[test]
    fn ln_gamma_ratio_is_exact_where_the_log_gammas_cancel() {
        // Small arguments: the plain difference.
        for (s, d) in [(0.3, 2.0), (5.0, 0.25), (19.9, 3.0)] {
            assert!(close(
                ln_gamma_ratio(s, d),
                ln_gamma(s + d) - ln_gamma(s),
                1e-13
            ));
        }
        // Integer steps: Σ ln(s + k), k < d, summed directly.
        for s in [20.0, 137.5, 1e4, 1e6, 3e9] {
            for d in [1.0, 3.0, 40.0] {
                let direct: f64 = (0..d as usize).map(|k| (s + k as f64).ln()).sum();
                let got = ln_gamma_ratio(s, d);
                assert!(
                    (got - direct).abs() <= 1e-13 * direct.abs(),
                    "s={s} d={d}: {got} vs {direct}"
                );
            }
        }
        // Non-integer step at s = 10^6, from mpmath at 50 digits:
        // loggamma(10**6 + 2.5) - loggamma(10**6).
        assert!(close(
            ln_gamma_ratio(1e6, 2.5),
            34.538_778_269_909_435,
            1e-14
        ));
    }

    #[test]
    fn digamma_matches_known_values() {
        let euler = 0.577_215_664_901_532_9;
        assert!(close(digamma(1.0), -euler, 1e-14));
        assert!(close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-14));
        assert!(close(digamma(10.0), 2.251_752_589_066_721, 1e-14));
        // Derivative of ln_gamma, numerically.
        for x in [0.3, 2.7, 17.0] {
            let h = 1e-5;
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(close(digamma(x), numeric, 1e-8), "x={x}");
        }
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1-z)/z
        for z in [0.1f64, 0.5, 0.9, 0.99] {
            let expected = -(1.0 - z).ln() / z;
            assert!(
                close(hyp2f1(1.0, 1.0, 2.0, z).unwrap(), expected, 1e-12),
                "z={z}"
            );
        }
        // 2F1(a, b; b; z) = (1-z)^-a
        assert!(close(
            hyp2f1(2.5, 3.0, 3.0, 0.7).unwrap(),
            0.3f64.powf(-2.5),
            1e-12
        ));
        // 2F1(1/2, 1/2; 3/2; z^2) = asin(z)/z
        let z: f64 = 0.8;
        assert!(close(
            hyp2f1(0.5, 0.5, 1.5, z * z).unwrap(),
            z.asin() / z,
            1e-12
        ));
        assert_eq!(hyp2f1(1.0, 1.0, 2.0, 1.0), None);
        assert_eq!(hyp2f1(1.0, 1.0, -2.0, 0.5), None, "pole at c = -2");
    }

    #[test]
    fn ln_hyp2f1_is_the_log_of_the_series_even_beyond_f64() {
        for (a, b, c, z) in [
            (1.0, 1.0, 2.0, 0.5),
            (2.5, 3.0, 3.0, 0.7),
            (0.3, 7.0, 1.5, 0.9),
        ] {
            let plain = hyp2f1(a, b, c, z).unwrap();
            assert!(close(ln_hyp2f1(a, b, c, z).unwrap(), plain.ln(), 1e-13));
        }
        // 2F1(a, b; b; z) = (1-z)^-a, here about 10^603.
        let ln = ln_hyp2f1(600.0, 5.0, 5.0, 0.99).unwrap();
        assert!(close(ln, -600.0 * 0.01f64.ln(), 1e-12), "{ln}");
        assert_eq!(ln_hyp2f1(-1.0, 1.0, 2.0, 0.5), None);
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0), None);
    }

    #[test]
    fn hyp2f1_accepts_negative_non_integer_c() {
        // Values from mpmath.hyp2f1 at 50 digits.
        for (a, b, c, z, expected) in [
            (-0.5, -0.9, -0.8, 0.9, 0.372_947_588_419_441_4),
            (0.7, 1.2, -1.5, 0.5, 11.991_092_134_948_45),
            (2.0, 3.0, -0.25, 0.3, -83.252_711_048_606_57),
        ] {
            let got = hyp2f1(a, b, c, z).unwrap();
            assert!(
                close(got, expected, 1e-13),
                "2F1({a}, {b}; {c}; {z}) = {got}"
            );
        }
    }
}
