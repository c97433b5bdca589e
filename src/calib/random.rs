//! Seeded standard-normal samples. Signed inputs matter: uniform [0, 1) inputs never make
//! a ReLU's input negative and would hide a removed activation.

use ndarray::ArrayD;

/// SplitMix64: tiny, fast, and the same stream on every platform and version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A stream of its own for each `parts` (an epoch and a sample, say), so that what a
    /// sample draws does not depend on what was drawn before it: work can run in any
    /// order, and a resumed run draws what an uninterrupted one would.
    pub fn derived(seed: u64, parts: &[u64]) -> Rng {
        let mut state = Rng::new(seed).next_u64();
        for &part in parts {
            state = Rng::new(state ^ part).next_u64();
        }
        Rng::new(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Shuffles in place (Fisher–Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// An array of the given dims filled with standard-normal samples.
pub fn normal_array(dims: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(dims.to_vec(), || rng.normal() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_unit_moments_and_a_fixed_stream() {
        let mut rng = Rng::new(7);
        let xs: Vec<f64> = (0..20000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
        assert_eq!(Rng::new(7).next_u64(), Rng::new(7).next_u64());
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn shuffle_permutes_and_the_seed_fixes_the_order() {
        let shuffled = |seed| {
            let mut items: Vec<usize> = (0..50).collect();
            shuffle(&mut items, &mut Rng::new(seed));
            items
        };
        let mut sorted = shuffled(1);
        assert_ne!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(sorted, shuffled(1));
        assert_ne!(sorted, shuffled(2));
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
