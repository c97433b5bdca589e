//! Selection: walk the gate schedule, folding one more group at a time (and refitting
//! what was folded), measure each step on the held-out data and in tract, and choose the
//! fastest step within the user's budget.
//!
//! Step 0 is the exact-only model; step k is the last step within budget with the next
//! entry of the schedule folded (and the layers its folds made refit) — one group, or, on
//! fine-tuned weights, every group whose gate crossed, folded into the fine-tuned model at
//! once. A step over budget is measured and reported but not built on, so a group that
//! breaks fidelity does not take the groups after it down with it, and with a tight budget
//! every group is measured on its own. Every step is measured (unless a target speedup is
//! reached first), so the walk shows where fidelity breaks, not only where it stopped.
//!
//! Each figure comes with a confidence interval over the held-out samples (their groups
//! resampled whole when they have groups), and a step fits the budget only if the
//! pessimistic end of each interval does: a drop the data cannot rule out is a drop.
//!
//! The step chosen is the fastest within budget, unless a step within budget with more
//! groups folded is as fast within the timing's noise: between latencies the measurement
//! cannot tell apart, the shallower network is the tool's purpose, and the step that
//! happened to time faster is chance.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::gates::GateGroup;
use crate::gates::loss::{OutputKind, Target};
use crate::gates::refit::{self, Refitted};
use crate::ir::Model;
use crate::ir::stats::ModelStats;
use crate::passes::{self, Ctx, FoldRecord, Linearize, Pass};
use crate::progress::{Progress, Stage};
use crate::runtime::bench::{self, BenchOptions};
use crate::runtime::compare::{Comparison, Expected, FidelityIntervals, OutputComparison};
use crate::runtime::interval::{Interval, Resampling, distinct_groups};

/// Interleaved pairs a step within budget is timed over, and one over budget.
const CHOICE_RUNS: usize = 90;
const REPORT_RUNS: usize = 10;

/// What the user accepts.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    /// Largest top-1 agreement drop allowed on class outputs, in points.
    pub max_drop: f64,
    /// Largest relative error allowed on regression outputs.
    pub max_error: f64,
    /// Stop at the first step within budget at least this much faster.
    pub target_speedup: Option<f64>,
    /// The confidence of the intervals the budget is judged on, in (0, 1).
    pub confidence: f64,
}

impl Budget {
    /// The fidelity fits at the pessimistic end of its intervals: its drop within
    /// `max_drop` points, its error within `max_error`.
    fn holds(&self, fidelity: &Fidelity) -> bool {
        let drop_fits = fidelity.drop() * 100.0 <= self.max_drop + 1e-9;
        drop_fits
            && fidelity
                .max_error
                .is_none_or(|e| e.interval.high <= self.max_error)
    }

    /// `fidelity`, compared on held-out data (with intervals where estimated), fits over
    /// the outputs of `targets`.
    pub fn admits(&self, targets: &[Target], fidelity: &[OutputComparison]) -> bool {
        self.holds(&summary(targets, fidelity))
    }

    /// `step` ends the walk: within budget and at least the target speedup.
    pub fn reached(&self, step: &Step) -> bool {
        step.within_budget
            && self
                .target_speedup
                .is_some_and(|s| 1.0 / step.cost_ratio() >= s)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_drop: 1.0,
            max_error: 0.05,
            target_speedup: None,
            confidence: 0.95,
        }
    }
}

/// One step of the walk: `groups` groups folded (those of the last step within budget
/// before it, and its own).
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub groups: usize,
    /// The activations removed, by root node.
    pub removed: Vec<String>,
    pub folds: Vec<FoldRecord>,
    pub refitted: Vec<Refitted>,
    /// Every output against the original, on the held-out data.
    pub fidelity: Vec<OutputComparison>,
    /// The lowest top-1 agreement over class outputs.
    pub agreement: Option<f64>,
    /// The largest pairwise flip rate over class outputs (see
    /// [`OutputComparison::pairwise_flips`]): the budget holds the larger of it and the
    /// agreement drop.
    pub pairwise_flips: Option<f64>,
    /// The largest relative error over regression outputs.
    pub max_error: Option<f64>,
    /// The intervals of the three figures above (`max_rel_error` holds `max_error`'s),
    /// each end taken over the outputs as the figure is.
    pub intervals: Option<FidelityIntervals>,
    /// MACs against the original's.
    pub mac_ratio: f64,
    /// Latency against the original's, median of interleaved pairs in tract (90 within
    /// budget, 10 over); not measured with [`Cost::Macs`](crate::Cost::Macs), where the MAC
    /// ratio decides.
    pub latency_ratio: Option<f64>,
    /// The standard error of `latency_ratio` (see
    /// [`PairTiming::ratio_standard_error`](bench::PairTiming::ratio_standard_error)).
    pub latency_noise: Option<f64>,
    pub within_budget: bool,
}

impl Step {
    fn fidelity(&self) -> Fidelity {
        let interval =
            |of: fn(&FidelityIntervals) -> Option<Interval>| self.intervals.as_ref().and_then(of);
        Fidelity {
            agreement: Estimate::of(self.agreement, interval(|i| i.agreement)),
            pairwise_flips: Estimate::of(self.pairwise_flips, interval(|i| i.pairwise_flips)),
            max_error: Estimate::of(self.max_error, interval(|i| i.max_rel_error)),
        }
    }

    /// What the walk minimises: measured latency, or the MAC estimate without it.
    pub fn cost_ratio(&self) -> f64 {
        self.latency_ratio.unwrap_or(self.mac_ratio)
    }

    /// The two cost ratios differ by less than twice the standard error of their
    /// difference: the timing cannot tell which is faster (MAC ratios always can).
    fn as_fast_as(&self, other: &Step) -> bool {
        let noise = |s: &Step| s.latency_noise.unwrap_or(0.0);
        let band = 2.0 * noise(self).hypot(noise(other));
        self.cost_ratio() <= other.cost_ratio() + band
    }
}

/// The step to write (see the module documentation); step 0 when none is within budget.
fn choose(steps: &[Step]) -> usize {
    let within = || steps.iter().enumerate().filter(|(_, s)| s.within_budget);
    let by_cost =
        |a: &(usize, &Step), b: &(usize, &Step)| a.1.cost_ratio().total_cmp(&b.1.cost_ratio());
    let Some((_, fastest)) = within().min_by(by_cost) else {
        return 0;
    };
    within()
        .filter(|(_, s)| s.as_fast_as(fastest))
        .max_by(|a, b| a.1.groups.cmp(&b.1.groups).then(by_cost(b, a)))
        .map_or(0, |(k, _)| k)
}

/// The walk and the step chosen.
#[derive(Clone, Debug, Serialize)]
pub struct Walk {
    pub steps: Vec<Step>,
    pub chosen: usize,
    pub held_out: HeldOut,
    #[serde(skip)]
    pub model: Model,
}

impl Walk {
    /// Of the steps beyond the exact one that miss the budget, the one that loses least.
    pub fn closest_miss(&self) -> Option<&Step> {
        let missed = self.steps.iter().skip(1).filter(|s| !s.within_budget);
        missed.min_by(|a, b| {
            a.fidelity()
                .shortfall()
                .total_cmp(&b.fidelity().shortfall())
        })
    }
}

/// What the walk's figures rest on.
#[derive(Clone, Debug, Serialize)]
pub struct HeldOut {
    /// Over every split's held-out part: with k folds, every sample.
    pub samples: usize,
    /// How many groups the samples came from, when the data has groups: the units the
    /// intervals resample.
    pub groups: Option<usize>,
    pub confidence: f64,
    /// The (training, held-out) splits the figures are pooled over: 1, or k for k-fold.
    pub splits: usize,
}

/// What the walk needs besides the schedule.
pub struct Walker<'a> {
    pub original: &'a Model,
    /// The exact-only model (canonical rewrites and exact folds), step 0.
    pub base: &'a Model,
    pub groups: &'a [GateGroup],
    pub targets: &'a [Target],
    /// Where each step is made and measured: every split folds the same groups into its
    /// own start model, refits on its own training part and is measured on its own
    /// held-out part; the figures are pooled over the splits, and the model written is
    /// the first split's.
    pub splits: Vec<Split<'a>>,
    /// Input dims at batch 1, for latency.
    pub dims: &'a [Vec<usize>],
    pub budget: &'a Budget,
    pub seed: u64,
}

/// One (training, held-out) split of the data, as the walk uses it.
pub struct Split<'a> {
    /// What the steps fold: `base`, or the fine-tuned model with its gates as trained.
    pub start: &'a Model,
    /// Refit folded layers towards these (none: no refit).
    pub refit_to: Option<refit::OriginalValues<'a>>,
    /// The original's outputs on the held-out part.
    pub held_out: &'a Expected<'a>,
}

impl Walker<'_> {
    /// Walks `schedule` (the groups each step adds, safest first), a step of `progress`
    /// per measured step. Each step adds its groups to the last step within budget: they are
    /// linearised and folded, and only the layers those folds made are refit; a step over
    /// budget is measured and reported, and the walk goes on without it.
    /// Steps that fold one group alone on the start model reuse what `alone` holds of it
    /// (see [`Walker::by_fidelity_alone`]).
    pub fn walk(
        &self,
        schedule: &[Vec<usize>],
        mut alone: FoldedAlone,
        ctx: &mut Ctx,
        progress: &dyn Progress,
    ) -> Result<Walk> {
        let label = format!(
            "measuring the schedule (held-out data, {})",
            ctx.cost.borrow().engine.name()
        );
        let stage = Stage::begin(progress, &label, Some(schedule.len() as u64 + 1));
        let original_macs = macs(self.original, ctx)?;
        let mut kept = self.starts();
        let mut steps: Vec<Step> = Vec::new();
        let mut within_budget: Vec<(usize, Model)> = Vec::new();
        for k in 0..=schedule.len() {
            let adds = k.checked_sub(1).map(|i| schedule[i].as_slice());
            let Folded { splits, fidelity } = self.step_model(adds, &kept, &mut alone, ctx)?;
            let (model, done) = &splits[0];
            let step = self.measure(model, done, fidelity, original_macs, ctx)?;
            stage.advance(1);
            let reached = self.budget.reached(&step);
            if step.within_budget {
                within_budget.push((k, model.clone()));
                if k > 0 {
                    kept = splits;
                }
            }
            steps.push(step);
            if reached {
                break;
            }
        }
        let chosen = choose(&steps);
        let model = match within_budget.into_iter().find(|(k, _)| *k == chosen) {
            Some((_, model)) => model,
            None => self.base.clone(),
        };
        Ok(Walk {
            steps,
            chosen,
            held_out: self.held_out_basis(),
            model,
        })
    }

    /// `groups` ordered by the fidelity each keeps when folded (and refit) alone, best
    /// first, on the held-out data: for gates training could not tell apart (none crossed
    /// the threshold), what each costs is measured instead, a step of `progress` per
    /// group. Each group's folded model is kept for the walk.
    pub fn by_fidelity_alone(
        &self,
        groups: &[usize],
        ctx: &mut Ctx,
        progress: &dyn Progress,
    ) -> Result<(Vec<usize>, FoldedAlone)> {
        let mut scored = Vec::with_capacity(groups.len());
        let mut alone = FoldedAlone::default();
        let label = "ordering the groups whose gates did not cross: each folded alone";
        let stage = Stage::begin(progress, label, Some(groups.len() as u64));
        for &g in groups {
            let start = self.starts();
            let folded = self.step_model(Some(&[g]), &start, &mut FoldedAlone::default(), ctx)?;
            let shortfall = summary(self.targets, &folded.fidelity).shortfall();
            scored.push((-shortfall, g));
            alone.0.insert(g, folded);
            stage.advance(1);
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok((scored.into_iter().map(|(_, g)| g).collect(), alone))
    }

    /// Each split's start model, nothing folded yet.
    fn starts(&self) -> Vec<(Model, Done)> {
        let start = |split: &Split| (split.start.clone(), Done::default());
        self.splits.iter().map(start).collect()
    }

    /// A step's model in each split, what made it and the held-out fidelity pooled over
    /// the splits: the base without groups to add; one group added to the start models is
    /// what the ordering folded, when it did.
    fn step_model(
        &self,
        adds: Option<&[usize]>,
        kept: &[(Model, Done)],
        alone: &mut FoldedAlone,
        ctx: &mut Ctx,
    ) -> Result<Folded> {
        let splits = match adds {
            None => vec![(self.base.clone(), Done::default()); self.splits.len()],
            Some(groups) => {
                if let ([group], 0) = (groups, kept[0].1.groups)
                    && let Some(folded) = alone.0.remove(group)
                {
                    return Ok(folded);
                }
                let fold_in = |((model, done), split): (&(Model, Done), &Split)| {
                    let (mut model, mut done) = (model.clone(), done.clone());
                    self.fold_groups(&mut model, groups, &mut done, split, ctx)?;
                    Ok((model, done))
                };
                kept.iter()
                    .zip(&self.splits)
                    .map(fold_in)
                    .collect::<Result<_>>()?
            }
        };
        let comparisons = (splits.iter().zip(&self.splits))
            .map(|((model, _), split)| split.held_out.compare(model))
            .collect::<Result<Vec<_>>>()?;
        let mut pooled = Comparison::pooled(&comparisons);
        pooled.estimate_intervals(self.held_out_groups().as_deref(), &self.resampling());
        Ok(Folded {
            splits,
            fidelity: pooled.outputs,
        })
    }

    /// Linearises `groups` in `model`, folds across them, and refits what those folds
    /// made towards `split`'s training part.
    fn fold_groups(
        &self,
        model: &mut Model,
        groups: &[usize],
        done: &mut Done,
        split: &Split,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let removed: Vec<String> = groups
            .iter()
            .flat_map(|&g| self.groups[g].nodes())
            .map(String::from)
            .collect();
        Linearize::nodes(&removed).run(&mut model.graph, ctx)?;
        let folds = passes::run_pipeline(&passes::folding(), &mut model.graph, ctx)?.folds;
        ctx.linearised.clear();
        if let Some(values) = &split.refit_to {
            done.refitted
                .extend(refit::refit(model, values, &done.folds, &folds, self.seed)?);
        }
        done.groups += groups.len();
        done.removed.extend(removed);
        done.folds.extend(folds);
        Ok(())
    }

    /// The step's fidelity judged, then its latency: timed long when within budget (steps that
    /// compete for the choice differ by a few percent), briefly when over (it cannot be
    /// chosen; its latency is for the table).
    fn measure(
        &self,
        model: &Model,
        done: &Done,
        fidelity: Vec<OutputComparison>,
        original_macs: f64,
        ctx: &Ctx,
    ) -> Result<Step> {
        let mut step = Step {
            groups: done.groups,
            removed: done.removed.clone(),
            folds: done.folds.clone(),
            refitted: done.refitted.clone(),
            agreement: None,
            pairwise_flips: None,
            max_error: None,
            intervals: None,
            fidelity,
            mac_ratio: macs(model, ctx)? / original_macs,
            latency_ratio: None,
            latency_noise: None,
            within_budget: false,
        };
        self.judge(&mut step);
        if let Some(engine) = ctx.cost.borrow().engine() {
            let runs = match step.within_budget {
                true => CHOICE_RUNS,
                false => REPORT_RUNS,
            };
            let options = BenchOptions {
                warmup: 2,
                runs,
                ..BenchOptions::default()
            };
            let timing = bench::time_models(engine, self.original, model, self.dims, options)?;
            step.latency_ratio = Some(timing.ratio.median);
            step.latency_noise = Some(timing.ratio_standard_error());
        }
        Ok(step)
    }

    /// Sums up the step's fidelity per kind of output and checks it against the budget.
    fn judge(&self, step: &mut Step) {
        let fidelity = summary(self.targets, &step.fidelity);
        step.within_budget = self.budget.holds(&fidelity);
        step.agreement = fidelity.agreement.map(|e| e.value);
        step.pairwise_flips = fidelity.pairwise_flips.map(|e| e.value);
        step.max_error = fidelity.max_error.map(|e| e.value);
        step.intervals = Some(FidelityIntervals {
            agreement: fidelity.agreement.map(|e| e.interval),
            pairwise_flips: fidelity.pairwise_flips.map(|e| e.interval),
            max_rel_error: fidelity.max_error.map(|e| e.interval),
        });
    }

    fn resampling(&self) -> Resampling {
        Resampling {
            confidence: self.budget.confidence,
            seed: self.seed,
        }
    }

    /// Every held-out sample's group, the splits' in order, when they all have groups.
    fn held_out_groups(&self) -> Option<Vec<i64>> {
        let groups: Option<Vec<&[i64]>> = self
            .splits
            .iter()
            .map(|split| split.held_out.groups())
            .collect();
        groups.map(|g| g.concat())
    }

    fn held_out_basis(&self) -> HeldOut {
        HeldOut {
            samples: self.splits.iter().map(|s| s.held_out.samples()).sum(),
            groups: self.held_out_groups().as_deref().map(distinct_groups),
            confidence: self.budget.confidence,
            splits: self.splits.len(),
        }
    }
}

/// A model's fidelity summed up over its outputs of each kind.
struct Fidelity {
    /// The lowest top-1 agreement over class outputs.
    agreement: Option<Estimate>,
    /// The largest pairwise flip rate over class outputs.
    pairwise_flips: Option<Estimate>,
    /// The largest relative error over regression outputs.
    max_error: Option<Estimate>,
}

impl Fidelity {
    /// What the budget's `max_drop` holds, at the pessimistic end of the intervals: the
    /// agreement lost, or the pairwise flip rate when larger (on a few dozen samples, no
    /// flip seen does not mean none to come).
    fn drop(&self) -> f64 {
        let lost = self.agreement.map_or(0.0, |a| 1.0 - a.interval.low);
        lost.max(self.pairwise_flips.map_or(0.0, |f| f.interval.high))
    }

    /// How much is lost as measured, over both kinds of outputs: what orders groups and
    /// misses (at the intervals' worst ends, few held-out groups would make every step
    /// tie at a total loss).
    fn shortfall(&self) -> f64 {
        let lost = self.agreement.map_or(0.0, |a| 1.0 - a.value);
        let drop = lost.max(self.pairwise_flips.map_or(0.0, |f| f.value));
        drop + self.max_error.map_or(0.0, |e| e.value)
    }
}

/// A figure and its interval.
#[derive(Clone, Copy)]
struct Estimate {
    value: f64,
    interval: Interval,
}

impl Estimate {
    /// `value` with `interval`, or with none: `value` at both ends.
    fn of(value: Option<f64>, interval: Option<Interval>) -> Option<Estimate> {
        value.map(|value| Estimate {
            value,
            interval: interval.unwrap_or(Interval::point(value)),
        })
    }

    /// The figure over two outputs, `pick` (min or max) at the value and at each end.
    fn over(self, other: Estimate, pick: fn(f64, f64) -> f64) -> Estimate {
        Estimate {
            value: pick(self.value, other.value),
            interval: Interval {
                low: pick(self.interval.low, other.interval.low),
                high: pick(self.interval.high, other.interval.high),
            },
        }
    }
}

/// The figures the budget holds over `targets`' outputs in `fidelity`.
fn summary(targets: &[Target], fidelity: &[OutputComparison]) -> Fidelity {
    let of_kind = |kind: OutputKind| {
        let targets = targets.iter().filter(move |t| t.kind == kind);
        targets.filter_map(|t| fidelity.iter().find(|f| f.name == t.output))
    };
    let interval = |f: &OutputComparison, of: fn(&FidelityIntervals) -> Option<Interval>| {
        f.intervals.as_ref().and_then(of)
    };
    Fidelity {
        agreement: of_kind(OutputKind::Class)
            .filter_map(|f| Estimate::of(f.agreement, interval(f, |i| i.agreement)))
            .reduce(|a, b| a.over(b, f64::min)),
        pairwise_flips: of_kind(OutputKind::Class)
            .filter_map(|f| Estimate::of(f.pairwise_flips, interval(f, |i| i.pairwise_flips)))
            .reduce(|a, b| a.over(b, f64::max)),
        max_error: of_kind(OutputKind::Regression)
            .filter_map(|f| Estimate::of(Some(f.max_rel_error), interval(f, |i| i.max_rel_error)))
            .reduce(|a, b| a.over(b, f64::max)),
    }
}

/// Groups folded (and refit) alone on the start model, by group: the ordering's work,
/// which the walk's steps that fold one group on the start model would repeat.
#[derive(Default)]
pub struct FoldedAlone(HashMap<usize, Folded>);

/// A step's model in each split, what made it, and its fidelity on the held-out data,
/// pooled over the splits.
struct Folded {
    splits: Vec<(Model, Done)>,
    fidelity: Vec<OutputComparison>,
}

/// What a step's model was made by.
#[derive(Clone, Default)]
struct Done {
    groups: usize,
    removed: Vec<String>,
    folds: Vec<FoldRecord>,
    refitted: Vec<Refitted>,
}

fn macs(model: &Model, ctx: &Ctx) -> Result<f64> {
    Ok(ModelStats::of(&model.graph, &ctx.pinned)?.macs as f64)
}

#[cfg(test)]
mod tests {
    use super::{Budget, Estimate, Fidelity, Step, choose};
    use crate::runtime::interval::Interval;

    /// A step of `groups` groups at `latency` ± `noise` (standard error).
    fn step(groups: usize, latency: f64, noise: f64, within_budget: bool) -> Step {
        Step {
            groups,
            removed: Vec::new(),
            folds: Vec::new(),
            refitted: Vec::new(),
            fidelity: Vec::new(),
            agreement: None,
            pairwise_flips: None,
            max_error: None,
            intervals: None,
            mac_ratio: 1.0,
            latency_ratio: Some(latency),
            latency_noise: Some(noise),
            within_budget,
        }
    }

    #[test]
    fn the_choice_is_the_most_folded_step_the_timing_cannot_tell_from_the_fastest() {
        let walk = |steps: &[(usize, f64, bool)], noise| {
            let steps: Vec<Step> = steps
                .iter()
                .map(|&(groups, latency, fits)| step(groups, latency, noise, fits))
                .collect();
            choose(&steps)
        };
        let steps = [
            (0, 0.950, true),
            (1, 0.940, true),
            (2, 0.946, true),
            (3, 0.900, false),
        ];
        // Noise 0.004: the band is 2·√2·0.004 ≈ 0.0113 around the fastest (0.940).
        assert_eq!(walk(&steps, 0.004), 2);
        // Noise 0.001: step 2 is measurably slower than step 1.
        assert_eq!(walk(&steps, 0.001), 1);
        // Over budget is never chosen, however fast; none within budget: step 0.
        assert_eq!(walk(&[(0, 1.0, false), (1, 0.5, false)], 0.0), 0);
        // Equal groups: the faster.
        assert_eq!(
            walk(&[(0, 1.0, true), (1, 0.96, true), (1, 0.95, true)], 0.01),
            2
        );
    }

    #[test]
    fn the_walk_ends_at_a_step_within_budget_that_reaches_the_target_speedup() {
        let budget = |target_speedup| Budget {
            target_speedup,
            ..Budget::default()
        };
        let (fast, slow) = (step(1, 0.75, 0.0, true), step(1, 0.9, 0.0, true));
        assert!(budget(Some(1.25)).reached(&fast));
        assert!(!budget(Some(1.25)).reached(&slow));
        assert!(!budget(Some(1.25)).reached(&step(1, 0.5, 0.0, false)));
        assert!(!budget(None).reached(&fast));
    }

    fn estimate(value: f64, low: f64, high: f64) -> Option<Estimate> {
        Estimate::of(Some(value), Some(Interval { low, high }))
    }

    #[test]
    fn the_budget_holds_the_larger_of_the_agreement_lost_and_the_pairwise_flips() {
        let fidelity = |agreement, pairwise_flips| Fidelity {
            agreement: Estimate::of(Some(agreement), None),
            pairwise_flips: Estimate::of(Some(pairwise_flips), None),
            max_error: None,
        };
        assert_eq!(fidelity(1.0, 0.02).drop(), 0.02);
        assert_eq!(fidelity(0.75, 0.02).drop(), 0.25);
        let regression_only = Fidelity {
            agreement: None,
            pairwise_flips: None,
            max_error: Estimate::of(Some(0.1), None),
        };
        assert_eq!(regression_only.drop(), 0.0);
    }

    #[test]
    fn the_budget_is_judged_on_the_pessimistic_end_of_each_interval() {
        let budget = Budget {
            max_drop: 5.0,
            max_error: 0.05,
            ..Budget::default()
        };
        let class = |agreement, pairwise_flips| Fidelity {
            agreement,
            pairwise_flips,
            max_error: None,
        };
        // 98 % agreement fits a 5-point budget, unless it may be as low as 90 %.
        assert!(budget.holds(&class(estimate(0.98, 0.96, 1.0), estimate(0.01, 0.0, 0.03))));
        assert!(!budget.holds(&class(estimate(0.98, 0.90, 1.0), estimate(0.01, 0.0, 0.03))));
        // Likewise the pairwise flips at their upper end, and the error at its.
        assert!(!budget.holds(&class(estimate(0.98, 0.96, 1.0), estimate(0.01, 0.0, 0.06))));
        let regression = |low, high| Fidelity {
            agreement: None,
            pairwise_flips: None,
            max_error: estimate(0.03, low, high),
        };
        assert!(budget.holds(&regression(0.02, 0.04)));
        assert!(!budget.holds(&regression(0.02, 0.07)));
    }

    #[test]
    fn groups_and_misses_are_ordered_by_what_was_measured_not_by_the_worst_ends() {
        let fidelity = |agreement: f64, low: f64| Fidelity {
            agreement: estimate(agreement, low, 1.0),
            pairwise_flips: None,
            max_error: None,
        };
        // Both may have lost everything; the first lost less on the data.
        let (better, worse) = (fidelity(0.9, 0.0), fidelity(0.6, 0.0));
        assert_eq!(better.drop(), worse.drop());
        assert!(better.shortfall() < worse.shortfall());
    }

    #[test]
    fn a_figure_over_outputs_takes_the_worst_output_at_each_end() {
        let a = estimate(0.9, 0.8, 0.95).unwrap();
        let b = estimate(0.85, 0.84, 0.86).unwrap();
        let lowest = a.over(b, f64::min);
        assert_eq!(
            (lowest.value, lowest.interval),
            (
                0.85,
                Interval {
                    low: 0.8,
                    high: 0.86
                }
            )
        );
    }
}
