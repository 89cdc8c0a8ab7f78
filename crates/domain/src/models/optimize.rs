//! A small quasi-Newton minimiser (BFGS with a backtracking Armijo line
//! search), used on log-parameters so every parameter stays positive.

/// Result of a minimisation.
#[derive(Debug, Clone)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    pub converged: bool,
    /// The final inverse-Hessian estimate (to warm-start a related problem).
    pub inverse_hessian: Vec<Vec<f64>>,
}

/// An objective: the value and the gradient at a point.
pub type Objective<'a> = dyn Fn(&[f64]) -> (f64, Vec<f64>) + 'a;

/// Minimises `f`, which returns the value and the gradient at a point.
/// Converges when the largest gradient component is below `gtol` or a step
/// no longer changes the value relative to `ftol`.
pub fn bfgs(
    f: &Objective<'_>,
    start: &[f64],
    gtol: f64,
    ftol: f64,
    max_iterations: usize,
) -> Minimum {
    bfgs_from(f, start, None, gtol, ftol, max_iterations)
}

/// [`bfgs`] starting from a known inverse-Hessian estimate.
pub fn bfgs_from(
    f: &Objective<'_>,
    start: &[f64],
    inverse_hessian: Option<&[Vec<f64>]>,
    gtol: f64,
    ftol: f64,
    max_iterations: usize,
) -> Minimum {
    let n = start.len();
    let mut x = start.to_vec();
    let (mut fx, mut g) = f(&x);
    let mut h = match inverse_hessian {
        Some(h)
            if h.len() == n
                && h.iter()
                    .all(|row| row.len() == n && row.iter().all(|v| v.is_finite())) =>
        {
            h.to_vec()
        }
        _ => identity(n),
    };
    if !fx.is_finite() {
        return Minimum {
            x,
            value: fx,
            iterations: 0,
            converged: false,
            inverse_hessian: h.clone(),
        };
    }
    for iteration in 1..=max_iterations {
        if max_abs(&g) < gtol {
            return Minimum {
                x,
                value: fx,
                iterations: iteration - 1,
                converged: true,
                inverse_hessian: h.clone(),
            };
        }
        let mut d: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| h[i][j] * g[j]).sum::<f64>())
            .collect();
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            h = identity(n);
            d = g.iter().map(|v| -v).collect();
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        // Backtracking line search (Armijo), steps capped so exp() stays finite.
        let longest = max_abs(&d);
        let mut step = if longest > 5.0 { 5.0 / longest } else { 1.0 };
        let mut accepted = None;
        for _ in 0..60 {
            let candidate: Vec<f64> = x.iter().zip(&d).map(|(xi, di)| xi + step * di).collect();
            let (fc, gc) = f(&candidate);
            if fc.is_finite() && fc <= fx + 1e-4 * step * slope {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((next, f_next, g_next)) = accepted else {
            // No progress possible along any step: at a (numerical) minimum?
            let converged = max_abs(&g) < gtol * 1e3;
            return Minimum {
                x,
                value: fx,
                iterations: iteration,
                converged,
                inverse_hessian: h.clone(),
            };
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let small_change = (fx - f_next).abs() <= ftol * fx.abs().max(1.0);
        x = next;
        fx = f_next;
        g = g_next;
        if small_change && max_abs(&g) < gtol * 1e3 {
            return Minimum {
                x,
                value: fx,
                iterations: iteration,
                converged: true,
                inverse_hessian: h.clone(),
            };
        }
        if sy > 1e-12 {
            // H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i][j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i][j] += -rho * (hy[i] * s[j] + s[i] * hy[j])
                        + (rho * rho * yhy + rho) * s[i] * s[j];
                }
            }
        }
    }
    let converged = max_abs(&g) < gtol;
    Minimum {
        x,
        value: fx,
        iterations: max_iterations,
        converged,
        inverse_hessian: h.clone(),
    }
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_the_rosenbrock_function() {
        let f = |p: &[f64]| {
            let (x, y) = (p[0], p[1]);
            let value = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
            let grad = vec![
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            ];
            (value, grad)
        };
        let m = bfgs(&f, &[-1.2, 1.0], 1e-9, 1e-15, 1_000);
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }
}
