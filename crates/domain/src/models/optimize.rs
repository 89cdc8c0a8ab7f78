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

/// Iterations over which a value that no longer falls counts as converged,
/// if the gradient is below `STALL_GRADIENT` too. (The objectives here are
/// mean log-likelihoods per customer over log-parameters: a gradient of
/// 1e-3 is a change of 1e-5 in it for a 1% move of a parameter.)
const STALL_ITERATIONS: usize = 25;
const STALL_GRADIENT: f64 = 1e-3;

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
    bfgs_until(
        f,
        start,
        inverse_hessian,
        gtol,
        ftol,
        max_iterations,
        &|_| false,
    )
    .0
}

/// A minimum within a box, and which coordinates ended on its walls.
#[derive(Debug, Clone)]
pub struct BoxedMinimum {
    pub minimum: Minimum,
    /// Per coordinate: held at its lower or upper bound.
    pub at_bound: Vec<bool>,
}

/// Minimises `f` with some coordinates kept within `[lo, hi]` (`None`: free),
/// by an active set: BFGS runs on the free coordinates until one leaves its
/// box; the one furthest out is held on the wall it crossed and the rest
/// are minimised again. A held coordinate is let go when the gradient says
/// the minimum lies back inside. The result is the minimum over the box, so
/// a likelihood whose supremum lies at infinity (a parameter running off
/// along a ridge) gets the best point on the wall instead of no answer.
pub fn bfgs_boxed(
    f: &Objective<'_>,
    start: &[f64],
    inverse_hessian: Option<&[Vec<f64>]>,
    bounds: &[Option<(f64, f64)>],
    gtol: f64,
    ftol: f64,
    max_iterations: usize,
) -> BoxedMinimum {
    let n = start.len();
    assert_eq!(bounds.len(), n, "one bound (or None) per coordinate");
    let clamp = |i: usize, v: f64| bounds[i].map_or(v, |(lo, hi)| v.clamp(lo, hi));
    let mut x: Vec<f64> = (0..n).map(|i| clamp(i, start[i])).collect();
    let mut held = vec![false; n];
    let mut iterations = 0;
    let mut releases = 0;
    let mut curvature = inverse_hessian.map(<[Vec<f64>]>::to_vec);
    loop {
        let free: Vec<usize> = (0..n).filter(|&i| !held[i]).collect();
        let full = |y: &[f64]| {
            let mut z = x.clone();
            for (k, &i) in free.iter().enumerate() {
                z[i] = y[k];
            }
            z
        };
        let restricted = |y: &[f64]| {
            let (value, g) = f(&full(y));
            (value, free.iter().map(|&i| g[i]).collect::<Vec<f64>>())
        };
        let outside = |y: &[f64]| {
            free.iter()
                .enumerate()
                .any(|(k, &i)| clamp(i, y[k]) != y[k])
        };
        let y0: Vec<f64> = free.iter().map(|&i| x[i]).collect();
        let (m, left) = bfgs_until(
            &restricted,
            &y0,
            curvature.take().as_deref(),
            gtol,
            ftol,
            max_iterations.saturating_sub(iterations).max(1),
            &outside,
        );
        iterations += m.iterations;
        let y = m.x.clone();
        if left && iterations < max_iterations {
            // Hold the coordinate furthest outside on its wall; the others
            // go on from where they are (pulled back into the box).
            let (k, _) = free
                .iter()
                .enumerate()
                .map(|(k, &i)| (k, (clamp(i, y[k]) - y[k]).abs()))
                .fold((0, 0.0), |best, c| if c.1 > best.1 { c } else { best });
            for (j, &i) in free.iter().enumerate() {
                x[i] = clamp(i, y[j]);
            }
            held[free[k]] = true;
            // The curvature learnt so far, without the held coordinate's
            // row and column (still positive definite).
            curvature = Some(
                (0..free.len())
                    .filter(|&a| a != k)
                    .map(|a| {
                        (0..free.len())
                            .filter(|&b| b != k)
                            .map(|b| m.inverse_hessian[a][b])
                            .collect()
                    })
                    .collect(),
            );
            continue;
        }
        x = full(&y);
        let (value, g) = f(&x);
        // A held coordinate whose gradient points back into the box is let
        // go (a bounded number of times, so a ridge cannot make this cycle).
        let inward = (0..n)
            .filter(|&i| held[i])
            .map(|i| {
                let (lo, _) = bounds[i].expect("only bounded coordinates are held");
                let into_box = if x[i] <= lo { -g[i] } else { g[i] };
                (i, into_box)
            })
            .filter(|&(_, d)| d > gtol * 1e3)
            .fold(None, |best: Option<(usize, f64)>, c| match best {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            });
        if let Some((i, _)) = inward
            && releases < 2 * n
            && iterations < max_iterations
        {
            held[i] = false;
            releases += 1;
            continue;
        }
        let converged = m.converged && !left && inward.is_none();
        let mut h = identity(n);
        for (a, &i) in free.iter().enumerate() {
            for (b, &j) in free.iter().enumerate() {
                h[i][j] = m.inverse_hessian[a][b];
            }
        }
        return BoxedMinimum {
            minimum: Minimum {
                x,
                value,
                iterations,
                converged,
                inverse_hessian: h,
            },
            at_bound: held,
        };
    }
}

/// BFGS that also stops, reporting `true`, as soon as an accepted step
/// lands where `outside` says.
fn bfgs_until(
    f: &Objective<'_>,
    start: &[f64],
    inverse_hessian: Option<&[Vec<f64>]>,
    gtol: f64,
    ftol: f64,
    max_iterations: usize,
    outside: &dyn Fn(&[f64]) -> bool,
) -> (Minimum, bool) {
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
    // Whether h carries curvature yet; the identity it starts from does not
    // (see the first update below).
    let mut scaled = h != identity(n);
    if !fx.is_finite() {
        return finish(x, fx, 0, false, &h, false);
    }
    let mut checkpoint = fx;
    for iteration in 1..=max_iterations {
        if max_abs(&g) < gtol {
            return finish(x, fx, iteration - 1, true, &h, false);
        }
        let mut d: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| h[i][j] * g[j]).sum::<f64>())
            .collect();
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            h = identity(n);
            scaled = false;
            d = g.iter().map(|v| -v).collect();
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        // Backtracking line search (Armijo), steps capped so exp() stays finite.
        let longest = max_abs(&d);
        let mut step = if longest > 5.0 { 5.0 / longest } else { 1.0 };
        let mut accepted = None;
        let full_step = step;
        for _ in 0..60 {
            let candidate: Vec<f64> = x.iter().zip(&d).map(|(xi, di)| xi + step * di).collect();
            let (fc, gc) = f(&candidate);
            if fc.is_finite() && fc <= fx + 1e-4 * step * slope {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        // The full step taken and the slope there still nearly as steep
        // (the curvature condition fails): the estimate is far too timid,
        // as on a ridge where the value falls linearly for a long way. Try
        // doubling the step while the value keeps falling, up to the cap;
        // otherwise BFGS, which cannot update on such a step, would repeat
        // it for ever.
        let took_full_step = step == full_step;
        while took_full_step && longest * step * 2.0 <= 5.0 {
            let Some((_, f_best, g_best)) = &accepted else {
                break;
            };
            let steep: f64 = g_best.iter().zip(&d).map(|(a, b)| a * b).sum();
            if steep > 0.9 * slope {
                break;
            }
            let longer = step * 2.0;
            let candidate: Vec<f64> = x.iter().zip(&d).map(|(xi, di)| xi + longer * di).collect();
            let (fc, gc) = f(&candidate);
            if !(fc.is_finite() && fc < *f_best && fc <= fx + 1e-4 * longer * slope) {
                break;
            }
            accepted = Some((candidate, fc, gc));
            step = longer;
        }
        let Some((next, f_next, g_next)) = accepted else {
            if scaled {
                // The quasi-Newton direction may be what fails (an
                // ill-conditioned estimate along a ridge): try again from
                // steepest descent before giving up.
                h = identity(n);
                scaled = false;
                continue;
            }
            // No progress possible along any step: at a (numerical) minimum?
            let converged = max_abs(&g) < gtol * 1e3;
            return finish(x, fx, iteration, converged, &h, false);
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let small_change = (fx - f_next).abs() <= ftol * fx.abs().max(1.0);
        // A step cut 20 times over means the estimate points nearly across
        // the valley: start the curvature afresh (else BFGS can take steps
        // of 1e-8 for ever, next to a minimum it does not reach).
        let stuck = step < 1e-6;
        x = next;
        fx = f_next;
        g = g_next;
        // A value that has stopped moving is a minimum for any purpose: the
        // point creeps along a flat ridge (a likelihood approaching its
        // supremum as a shape parameter runs to zero), or sits in a valley
        // so narrow that the last steps across it change the value by less
        // than its rounding (a likelihood of large shapes sums terms of 1e5
        // to a result of 1, so it is exact to about 1e-11, and a gradient of
        // 1e-5 across a curvature of 1e4 promises only 1e-14 more).
        if iteration % STALL_ITERATIONS == 0 {
            if checkpoint - fx <= 1e-12 * fx.abs().max(1.0) && max_abs(&g) < STALL_GRADIENT {
                return finish(x, fx, iteration, true, &h, false);
            }
            checkpoint = fx;
        }
        if outside(&x) {
            return finish(x, fx, iteration, false, &h, true);
        }
        if small_change && max_abs(&g) < gtol * 1e3 {
            return finish(x, fx, iteration, true, &h, false);
        }
        // The curvature condition, relative to the step: near a flat
        // optimum (a likelihood creeping towards its supremum) s and y are
        // both tiny, and an absolute threshold would skip every update and
        // leave BFGS taking gradient-sized steps for ever.
        let yy: f64 = y.iter().map(|v| v * v).sum();
        let ss: f64 = s.iter().map(|v| v * v).sum();
        if stuck {
            h = identity(n);
            scaled = false;
        } else if sy > 1e-10 * (ss * yy).sqrt() {
            if !scaled {
                // Before the first update, scale the identity to the
                // curvature just seen (Nocedal & Wright, eq. 6.20), so the
                // first quasi-Newton step has the right length whatever the
                // gradient's units.
                h = identity(n);
                for (i, row) in h.iter_mut().enumerate() {
                    row[i] = sy / yy;
                }
                scaled = true;
            }
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
    finish(x, fx, max_iterations, converged, &h, false)
}

/// The answer of [`bfgs_until`]: the point reached and whether it stopped
/// for leaving the region.
fn finish(
    x: Vec<f64>,
    value: f64,
    iterations: usize,
    converged: bool,
    h: &[Vec<f64>],
    left: bool,
) -> (Minimum, bool) {
    (
        Minimum {
            x,
            value,
            iterations,
            converged,
            inverse_hessian: h.to_vec(),
        },
        left,
    )
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

    #[test]
    fn a_box_wide_of_the_minimum_changes_nothing() {
        let f = |p: &[f64]| {
            let (x, y) = (p[0], p[1]);
            (
                (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2),
                vec![
                    -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                    200.0 * (y - x * x),
                ],
            )
        };
        let b = bfgs_boxed(
            &f,
            &[-1.2, 1.0],
            None,
            &[Some((-3.0, 3.0)), Some((-3.0, 3.0))],
            1e-9,
            1e-15,
            1_000,
        );
        assert!(b.minimum.converged, "{b:?}");
        assert_eq!(b.at_bound, [false, false]);
        assert!((b.minimum.x[0] - 1.0).abs() < 1e-6 && (b.minimum.x[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_ridge_to_infinity_ends_on_the_wall_with_the_rest_optimal() {
        // Decreasing without bound as u and w grow together with u - w = 1
        // (the shape of a likelihood whose two parameters run off keeping
        // their ratio). In the box the best point holds u on its wall and
        // puts w where the ridge wants it, not on the wall too.
        let f = |p: &[f64]| {
            let (u, w) = (p[0], p[1]);
            let e = (-(u + w) / 2.0).exp();
            let d = u - w - 1.0;
            (e + d * d, vec![-e / 2.0 + 2.0 * d, -e / 2.0 - 2.0 * d])
        };
        let b = bfgs_boxed(
            &f,
            &[0.0, 0.0],
            None,
            &[Some((-10.0, 10.0)), Some((-10.0, 10.0))],
            1e-12,
            1e-15,
            1_000,
        );
        assert!(b.minimum.converged, "{b:?}");
        assert_eq!(b.at_bound, [true, false], "{b:?}");
        assert_eq!(b.minimum.x[0], 10.0);
        // d/dw = 0 puts w at 9 + e^{-(10 + w)/2} / 4, a hair above 9.
        let w = b.minimum.x[1];
        let residual = -(-(10.0 + w) / 2.0).exp() / 2.0 - 2.0 * (10.0 - w - 1.0);
        assert!(residual.abs() < 1e-9 && (w - 9.0).abs() < 1e-4, "w = {w}");
        // A coordinate without bounds is never held.
        let free = bfgs_boxed(
            &f,
            &[0.0, 0.0],
            None,
            &[None, Some((-10.0, 10.0))],
            1e-12,
            1e-15,
            1_000,
        );
        assert_eq!(free.at_bound, [false, true], "{free:?}");
        assert_eq!(free.minimum.x[1], 10.0);
        assert!((free.minimum.x[0] - 11.0).abs() < 1e-4, "{free:?}");
    }

    #[test]
    fn a_held_coordinate_is_let_go_when_the_minimum_is_inside() {
        // Started on the wall with a gradient that points inside: the
        // answer is the interior minimum (2, -1), nothing held.
        let f = |p: &[f64]| {
            let (u, w) = (p[0] - 2.0, p[1] + 1.0);
            (u * u + w * w + u * w, vec![2.0 * u + w, 2.0 * w + u])
        };
        let b = bfgs_boxed(
            &f,
            &[50.0, 0.0],
            None,
            &[Some((-5.0, 5.0)), None],
            1e-10,
            1e-15,
            1_000,
        );
        assert!(b.minimum.converged, "{b:?}");
        assert_eq!(b.at_bound, [false, false]);
        assert!((b.minimum.x[0] - 2.0).abs() < 1e-6 && (b.minimum.x[1] + 1.0).abs() < 1e-6);
    }
}
