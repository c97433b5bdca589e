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
//! let by_group = bootstrap(&Clusters::of(8, Some(&groups)), &Resampling::default(), share);
//! let by_sample = bootstrap(&Clusters::of(8, None), &Resampling::default(), share);
//! assert!(by_group.high - by_group.low > by_sample.high - by_sample.low);
//! ```

use serde::Serialize;

use crate::calib::random::Rng;

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

/// The percentile interval of `statistic` (given the rows of one resample, repeats
/// included) over resamples of `clusters`; NaN at both ends without samples.
pub fn bootstrap(
    clusters: &Clusters,
    resampling: &Resampling,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> Interval {
    if clusters.is_empty() {
        return Interval::point(f64::NAN);
    }
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
            share(&outcomes),
        );
        let by_sample = bootstrap(&Clusters::of(100, None), &resampling, share(&outcomes));
        // Binomial half-widths at 95 %: ≈ 0.31 over 10 groups, ≈ 0.10 over 100 samples.
        assert!(
            (0.25..0.36).contains(&by_group.half_width()),
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
                share(&outcomes),
            )
        };
        assert_eq!(at(0.95, 7), at(0.95, 7));
        assert!(at(0.99, 7).half_width() > at(0.8, 7).half_width());
    }

    #[test]
    fn a_figure_every_sample_shows_alike_has_no_width_and_no_samples_no_interval() {
        let all = [true; 12];
        let interval = bootstrap(&Clusters::of(12, None), &Resampling::default(), share(&all));
        assert_eq!(interval, Interval::point(1.0));
        let none = bootstrap(&Clusters::of(0, None), &Resampling::default(), share(&all));
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
                let interval = bootstrap(&clusters, &resampling, share(&outcomes));
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
                let interval = bootstrap(&Clusters::of(60, None), &resampling, share(&outcomes));
                interval.low <= 0.8 && 0.8 <= interval.high
            })
            .count();
        let coverage = covered as f64 / 200.0;
        assert!((0.90..=0.98).contains(&coverage), "{coverage}");
    }
}
