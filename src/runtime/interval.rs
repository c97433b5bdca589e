//! Confidence intervals of figures measured on a sample of inputs, by the percentile
//! bootstrap: the figure is recomputed on many resamples of the data, and the interval
//! holds the middle `confidence` of those values.
//!
//! Samples that share a group (crops of one photo, frames of one clip) are not
//! independent: resampled one by one, 102 crops of 2 photos would count as 102
//! observations, and the interval would be far narrower than what 2 other photos show.
//! With groups, whole groups are resampled (the cluster bootstrap), so the width follows
//! the number of groups; without, the samples are. The resampling is seeded: the same
//! data and seed give the same interval.
//!
//! With few groups the percentile interval is far too narrow: resampling 2 photos can
//! only ever give the first, the second or both, while other photos may differ much more.
//! So each end's distance from the figure measured on all the data is scaled by
//! √(G/(G−1))·t(G−1)/z, G the number of units resampled — what turns a normal interval
//! with the plug-in spread into the Student-t interval of G units (the correction of
//! Hesterberg's expanded percentile interval, applied to the distances): ×9.2 for 2
//! groups at 95 %, ×1.2 for 10, ×1.02 for 100 samples. One group says nothing about
//! another: its interval is the figure's whole range.
//!
//! A figure every sample shows alike (100 % agreement) gets an interval of zero width:
//! the bootstrap cannot show variation the data does not hold. That is what the pairwise
//! flip rate is for (see [`OutputComparison::pairwise_flips`](super::compare::OutputComparison::pairwise_flips)).
//!
//! ```
//! use onnx_shallow::runtime::interval::{Clusters, Resampling, bootstrap};
//! // 6 samples agree, 2 do not, all of them in 2 groups that each agree or not together.
//! let agrees = [true, true, true, true, true, true, false, false];
//! let groups = [0, 0, 0, 0, 0, 0, 1, 1];
//! let share = |rows: &[usize]| rows.iter().filter(|&&i| agrees[i]).count() as f64 / rows.len() as f64;
//! let by_group = bootstrap(&Clusters::of(8, Some(&groups)), &Resampling::default(), 0.0..=1.0, share);
//! let by_sample = bootstrap(&Clusters::of(8, None), &Resampling::default(), 0.0..=1.0, share);
//! assert!(by_group.high - by_group.low > by_sample.high - by_sample.low);
//! ```

use std::ops::RangeInclusive;

use serde::Serialize;

use crate::calib::random::Rng;
use crate::error::{Error, Result};

/// Resamples per interval: enough that the 2.5 % and 97.5 % percentiles move by less
/// than a tenth of the interval's width from one seed to the next.
const RESAMPLES: usize = 2000;

/// The range a figure lies in at the chosen confidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// A figure measured without an interval: both ends at the value.
    pub fn point(value: f64) -> Interval {
        Interval {
            low: value,
            high: value,
        }
    }

    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

/// How intervals are estimated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Resampling {
    /// The share of resampled values the interval holds, in (0, 1).
    pub confidence: f64,
    pub seed: u64,
}

impl Default for Resampling {
    fn default() -> Resampling {
        Resampling {
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// Refuses a `confidence` no interval can have: it must lie in (0, 1).
pub fn check_confidence(confidence: f64) -> Result<()> {
    match confidence > 0.0 && confidence < 1.0 {
        true => Ok(()),
        false => Err(Error::invalid(
            "confidence",
            confidence,
            "a level in (0, 1), such as 0.95",
        )),
    }
}

/// The units a bootstrap draws: the samples of each group, or each sample alone.
pub struct Clusters(Vec<Vec<usize>>);

impl Clusters {
    /// `samples` samples, in the groups `groups` gives (one id per sample), or each alone.
    pub fn of(samples: usize, groups: Option<&[i64]>) -> Clusters {
        let Some(groups) = groups else {
            return Clusters((0..samples).map(|i| vec![i]).collect());
        };
        let mut by_id: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
        for (sample, &group) in groups.iter().enumerate().take(samples) {
            by_id.entry(group).or_default().push(sample);
        }
        Clusters(by_id.into_values().collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As many clusters drawn with replacement as there are: their samples, repeats kept.
    fn resample(&self, rng: &mut Rng, rows: &mut Vec<usize>) {
        rows.clear();
        for _ in 0..self.0.len() {
            let pick = (rng.next_u64() % self.0.len() as u64) as usize;
            rows.extend_from_slice(&self.0[pick]);
        }
    }
}

/// How many distinct groups `groups` (one id per sample) holds.
pub fn distinct_groups(groups: &[i64]) -> usize {
    Clusters::of(groups.len(), Some(groups)).len()
}

/// The interval of `statistic` (given the rows of one resample, repeats included) over
/// resamples of `clusters`, widened for few clusters (see the module documentation) within
/// `range`, the values the statistic can take; NaN at both ends without samples.
pub fn bootstrap(
    clusters: &Clusters,
    resampling: &Resampling,
    range: RangeInclusive<f64>,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> Interval {
    if clusters.is_empty() {
        return Interval::point(f64::NAN);
    }
    if clusters.len() == 1 {
        return Interval {
            low: *range.start(),
            high: *range.end(),
        };
    }
    let every: Vec<usize> = clusters.0.iter().flatten().copied().collect();
    let estimate = statistic(&every);
    let percentiles = percentile_interval(clusters, resampling, statistic);
    let widening = few_units_widening(clusters.len(), resampling.confidence);
    let within = |value: f64| value.clamp(*range.start(), *range.end());
    Interval {
        low: within(estimate - widening * (estimate - percentiles.low)),
        high: within(estimate + widening * (percentiles.high - estimate)),
    }
}

/// √(G/(G−1))·t(G−1)/z at `confidence` for `units` (at least 2) units.
fn few_units_widening(units: usize, confidence: f64) -> f64 {
    let g = units as f64;
    let p = 0.5 + confidence / 2.0;
    (g / (g - 1.0)).sqrt() * student_t_quantile(p, units - 1) / normal_quantile(p)
}

/// The middle `confidence` of `statistic` over resamples.
fn percentile_interval(
    clusters: &Clusters,
    resampling: &Resampling,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> Interval {
    let mut rng = Rng::new(resampling.seed);
    let mut rows = Vec::new();
    let mut values: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            clusters.resample(&mut rng, &mut rows);
            statistic(&rows)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - resampling.confidence) / 2.0;
    Interval {
        low: percentile(&values, tail),
        high: percentile(&values, 1.0 - tail),
    }
}

/// The value at quantile `q` of sorted `values`, the nearest rank.
fn percentile(values: &[f64], q: f64) -> f64 {
    let rank = (q * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The standard normal quantile, p in (0, 1): Acklam's rational approximation (relative
/// error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let poly = |coefficients: &[f64], x: f64| coefficients.iter().fold(0.0, |acc, c| acc * x + c);
    let tail = |q: f64| poly(&C, q) / (poly(&D, q) * q + 1.0);
    match p {
        p if p < 0.02425 => tail((-2.0 * p.ln()).sqrt()),
        p if p > 1.0 - 0.02425 => -tail((-2.0 * (1.0 - p).ln()).sqrt()),
        p => {
            let (q, r) = (p - 0.5, (p - 0.5) * (p - 0.5));
            q * poly(&A, r) / (poly(&B, r) * r + 1.0)
        }
    }
}

/// Student's t quantile with `df` degrees of freedom, p in (0, 1): exact for 1 and 2,
/// the Cornish–Fisher expansion beyond (Abramowitz and Stegun 26.7.5: 0.12 % low at 3,
/// closer above).
fn student_t_quantile(p: f64, df: usize) -> f64 {
    match df {
        1 => (std::f64::consts::PI * (p - 0.5)).tan(),
        2 => (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt(),
        _ => {
            let (z, n) = (normal_quantile(p), df as f64);
            let g1 = (z.powi(3) + z) / 4.0;
            let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
            let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
            let g4 = (79.0 * z.powi(9) + 776.0 * z.powi(7) + 1482.0 * z.powi(5)
                - 1920.0 * z.powi(3)
                - 945.0 * z)
                / 92160.0;
            z + g1 / n + g2 / n.powi(2) + g3 / n.powi(3) + g4 / n.powi(4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(outcomes: &[bool]) -> impl Fn(&[usize]) -> f64 + '_ {
        move |rows| rows.iter().filter(|&&i| outcomes[i]).count() as f64 / rows.len() as f64
    }

    #[test]
    fn groups_that_agree_or_not_together_widen_the_interval() {
        // 10 groups of 10 samples: 5 groups agree on every sample, 5 on none.
        let outcomes: Vec<bool> = (0..100).map(|i| (i / 10) % 2 == 0).collect();
        let groups: Vec<i64> = (0..100).map(|i| i / 10).collect();
        let resampling = Resampling::default();
        let by_group = bootstrap(
            &Clusters::of(100, Some(&groups)),
            &resampling,
            0.0..=1.0,
            share(&outcomes),
        );
        let by_sample = bootstrap(
            &Clusters::of(100, None),
            &resampling,
            0.0..=1.0,
            share(&outcomes),
        );
        // Binomial half-widths at 95 %: ≈ 0.31 over 10 groups (t-widened: ≈ 0.38), ≈ 0.10
        // over 100 samples.
        assert!(
            (0.32..0.45).contains(&by_group.half_width()),
            "{by_group:?}"
        );
        assert!(
            (0.08..0.12).contains(&by_sample.half_width()),
            "{by_sample:?}"
        );
        assert!(by_group.low < 0.5 && by_group.high > 0.5);
    }

    #[test]
    fn the_same_seed_gives_the_same_interval_and_a_higher_confidence_a_wider_one() {
        let outcomes: Vec<bool> = (0..40).map(|i| i % 3 != 0).collect();
        let clusters = Clusters::of(40, None);
        let at = |confidence, seed| {
            bootstrap(
                &clusters,
                &Resampling { confidence, seed },
                0.0..=1.0,
                share(&outcomes),
            )
        };
        assert_eq!(at(0.95, 7), at(0.95, 7));
        assert!(at(0.99, 7).half_width() > at(0.8, 7).half_width());
    }

    #[test]
    fn a_figure_every_sample_shows_alike_has_no_width_and_no_samples_no_interval() {
        let all = [true; 12];
        let resampling = Resampling::default();
        let interval = bootstrap(&Clusters::of(12, None), &resampling, 0.0..=1.0, share(&all));
        assert_eq!(interval, Interval::point(1.0));
        let none = bootstrap(&Clusters::of(0, None), &resampling, 0.0..=1.0, share(&all));
        assert!(none.low.is_nan() && none.high.is_nan());
    }

    /// `datasets` simulated data sets of `groups` groups of `size` samples; in each
    /// group a sample agrees with a probability drawn for the group (0.5 or 0.95, evenly:
    /// 0.725 over the population). The share of 95 % intervals that hold 0.725, resampled
    /// by group or by sample.
    fn coverage(datasets: u64, groups: usize, size: usize, by_group: bool) -> f64 {
        let truth = 0.725;
        let covered = (0..datasets)
            .filter(|&d| {
                let mut rng = Rng::new(1000 + d);
                let mut outcomes = Vec::with_capacity(groups * size);
                for _ in 0..groups {
                    let p = if rng.uniform() <= 0.5 { 0.5 } else { 0.95 };
                    outcomes.extend((0..size).map(|_| rng.uniform() <= p));
                }
                let ids: Vec<i64> = (0..groups * size).map(|i| (i / size) as i64).collect();
                let clusters = Clusters::of(ids.len(), by_group.then_some(ids.as_slice()));
                let resampling = Resampling {
                    confidence: 0.95,
                    seed: d,
                };
                let interval = bootstrap(&clusters, &resampling, 0.0..=1.0, share(&outcomes));
                interval.low <= truth && truth <= interval.high
            })
            .count();
        covered as f64 / datasets as f64
    }

    #[test]
    fn intervals_by_group_cover_the_truth_near_the_nominal_rate_and_by_sample_they_do_not() {
        // 200 data sets: a coverage of 0.95 shows as 0.92–0.98 (± 2 binomial standard
        // errors); the percentile bootstrap over 30 groups runs a little under nominal.
        let by_group = coverage(200, 30, 8, true);
        assert!((0.90..=0.98).contains(&by_group), "{by_group}");
        // The same data resampled by sample: the groups' spread is ignored.
        let by_sample = coverage(200, 30, 8, false);
        assert!(by_sample < 0.85, "{by_sample}");
    }

    #[test]
    fn intervals_over_independent_samples_cover_the_truth_near_the_nominal_rate() {
        let covered = (0..200u64)
            .filter(|&d| {
                let mut rng = Rng::new(5000 + d);
                let outcomes: Vec<bool> = (0..60).map(|_| rng.uniform() <= 0.8).collect();
                let resampling = Resampling {
                    confidence: 0.95,
                    seed: d,
                };
                let clusters = Clusters::of(60, None);
                let interval = bootstrap(&clusters, &resampling, 0.0..=1.0, share(&outcomes));
                interval.low <= 0.8 && 0.8 <= interval.high
            })
            .count();
        let coverage = covered as f64 / 200.0;
        assert!((0.90..=0.98).contains(&coverage), "{coverage}");
    }

    #[test]
    fn two_groups_reach_far_beyond_what_they_show_and_one_group_spans_the_range() {
        // Group 0 agrees on 3 of 4 samples, group 1 on 1 of 4: resamples give 0.25–0.75.
        let outcomes = [true, true, true, false, true, false, false, false];
        let two = Clusters::of(8, Some(&[0, 0, 0, 0, 1, 1, 1, 1]));
        let interval = bootstrap(&two, &Resampling::default(), 0.0..=1.0, share(&outcomes));
        assert_eq!(
            interval,
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
        let one = Clusters::of(8, Some(&[3; 8]));
        let interval = bootstrap(&one, &Resampling::default(), 0.0..=1.0, share(&outcomes));
        assert_eq!(
            interval,
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
    }

    #[test]
    fn quantiles_match_the_tables() {
        let close = |a: f64, b: f64| (a - b).abs() < 1.5e-3 * b.abs();
        assert!(close(normal_quantile(0.975), 1.959964));
        assert!(close(normal_quantile(0.005), -2.575829));
        for (df, t) in [
            (1, 12.7062),
            (2, 4.3027),
            (3, 3.1824),
            (9, 2.2622),
            (29, 2.0452),
        ] {
            assert!(close(student_t_quantile(0.975, df), t), "{df}");
        }
        assert!(close(
            few_units_widening(2, 0.95),
            2f64.sqrt() * 12.7062 / 1.959964
        ));
    }
}
