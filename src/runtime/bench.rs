//! Latency in tract. Two models are timed interleaved — A B A B … — so that whatever the
//! machine is doing meanwhile (another process, frequency scaling, a noisy neighbour)
//! falls on both alike, and their ratio is the median of the per-pair ratios, which a
//! few slow outliers cannot move.

use std::time::Instant;

use serde::Serialize;

use crate::calib::random::{Rng, normal_array};
use crate::error::Result;
use crate::ir::Model;
use crate::runtime::{Prepared, Session};

/// Distribution of run times, in seconds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Timing {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

impl Timing {
    fn of(mut samples: Vec<f64>) -> Timing {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Timing {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }
}

/// Two models timed against each other.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct PairTiming {
    pub a: Timing,
    pub b: Timing,
    /// Per-pair ratio b / a: its median, p10 and p90.
    pub ratio: Timing,
    pub pairs: usize,
}

/// How many runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    pub warmup: usize,
    pub runs: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 5,
            runs: 30,
        }
    }
}

fn time_once(session: &Session, inputs: &Prepared) -> Result<f64> {
    let start = Instant::now();
    session.run_prepared(inputs)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Times one model.
pub fn time(session: &Session, inputs: &Prepared, options: BenchOptions) -> Result<Timing> {
    for _ in 0..options.warmup {
        session.run_prepared(inputs)?;
    }
    let samples = (0..options.runs.max(1))
        .map(|_| time_once(session, inputs))
        .collect::<Result<Vec<_>>>()?;
    Ok(Timing::of(samples))
}

/// Times two models interleaved (A B A B …) and the ratio B / A.
pub fn time_pair(
    a: (&Session, &Prepared),
    b: (&Session, &Prepared),
    options: BenchOptions,
) -> Result<PairTiming> {
    for _ in 0..options.warmup {
        a.0.run_prepared(a.1)?;
        b.0.run_prepared(b.1)?;
    }
    let pairs = options.runs.max(1);
    let (mut ta, mut tb, mut ratios) = (
        Vec::with_capacity(pairs),
        Vec::with_capacity(pairs),
        Vec::with_capacity(pairs),
    );
    for _ in 0..pairs {
        let (x, y) = (time_once(a.0, a.1)?, time_once(b.0, b.1)?);
        ta.push(x);
        tb.push(y);
        ratios.push(y / x.max(f64::MIN_POSITIVE));
    }
    Ok(PairTiming {
        a: Timing::of(ta),
        b: Timing::of(tb),
        ratio: Timing::of(ratios),
        pairs,
    })
}

/// Loads both models in tract at `dims` (one per input) and times them interleaved on the
/// same seeded standard-normal inputs.
pub fn time_models(
    a: &Model,
    b: &Model,
    dims: &[Vec<usize>],
    options: BenchOptions,
) -> Result<PairTiming> {
    let mut rng = Rng::new(0);
    let inputs: Vec<_> = dims.iter().map(|d| normal_array(d, &mut rng)).collect();
    let (session_a, session_b) = (Session::new(a, dims)?, Session::new(b, dims)?);
    let (inputs_a, inputs_b) = (session_a.prepare(&inputs)?, session_b.prepare(&inputs)?);
    time_pair((&session_a, &inputs_a), (&session_b, &inputs_b), options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_sorted_samples() {
        let t = Timing::of(vec![
            5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 0.5, 2.5, 3.5, 1.5, 4.5,
        ]);
        assert_eq!((t.p10, t.median, t.p90), (1.0, 3.0, 5.0));
    }
}
