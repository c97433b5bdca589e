//! BatchNormalization in inference mode: y = scale·(x − mean)/√(var + ε) + bias per channel,
//! with gradients for x and all four per-channel tensors.

use ndarray::{ArrayD, Axis, IxDyn};

use crate::exec::float::Float;

/// The per-channel tensors as slices, checked against the channel count.
fn channels<T: Float>(stats: [&ArrayD<T>; 4], c: usize) -> Result<[&[T]; 4], String> {
    let mut out: [&[T]; 4] = [&[]; 4];
    for (o, s) in out.iter_mut().zip(stats) {
        if s.len() != c {
            return Err(format!(
                "per-channel tensor {:?} does not fit {c} channels",
                s.shape()
            ));
        }
        *o = s.as_slice().expect("contiguous");
    }
    Ok(out)
}

/// Calls `f(channel, plane)` for every channel plane of every sample.
fn planes<T: Float>(x: &mut ArrayD<T>, mut f: impl FnMut(usize, &mut [T])) {
    let c = x.shape()[1];
    let plane: usize = x.shape()[2..].iter().product();
    let data = x.as_slice_mut().expect("contiguous");
    for (i, p) in data.chunks_mut(plane.max(1)).enumerate() {
        f(i % c, p);
    }
}

pub(crate) fn forward<T: Float>(
    x: &ArrayD<T>,
    stats: [&ArrayD<T>; 4],
    epsilon: f64,
) -> Result<ArrayD<T>, String> {
    if x.ndim() < 2 {
        return Err(format!("input {:?} has no channel axis", x.shape()));
    }
    let [scale, bias, mean, var] = channels(stats, x.shape()[1])?;
    let mut y = x.as_standard_layout().into_owned();
    planes(&mut y, |c, p| {
        let a = scale[c] / (var[c] + T::from_f64(epsilon)).sqrt();
        let b = bias[c] - mean[c] * a;
        p.iter_mut().for_each(|v| *v = *v * a + b);
    });
    Ok(y)
}

/// Gradients for x, scale, bias, mean and var, each only when `need`ed.
pub(crate) fn backward<T: Float>(
    g: &ArrayD<T>,
    x: &ArrayD<T>,
    stats: [&ArrayD<T>; 4],
    epsilon: f64,
    need: [bool; 5],
) -> Vec<Option<ArrayD<T>>> {
    let c = x.shape()[1];
    let [scale, _, mean, var] = channels(stats, c).expect("checked in forward");
    let inv: Vec<T> = var
        .iter()
        .map(|&v| T::one() / (v + T::from_f64(epsilon)).sqrt())
        .collect();
    let dx = need[0].then(|| {
        let mut dx = g.clone();
        planes(&mut dx, |c, p| {
            p.iter_mut().for_each(|v| *v *= scale[c] * inv[c])
        });
        dx
    });
    // Σ g and Σ g·(x − mean) per channel, over the batch and the plane.
    let reduce_axes = |a: ArrayD<T>| -> Vec<T> {
        let mut a = a;
        while a.ndim() > 2 {
            a = a.sum_axis(Axis(2));
        }
        a.sum_axis(Axis(0)).into_raw_vec_and_offset().0
    };
    let sum_g = reduce_axes(g.clone());
    let mut centered = x.as_standard_layout().into_owned();
    planes(&mut centered, |c, p| {
        p.iter_mut().for_each(|v| *v -= mean[c])
    });
    let sum_gx = reduce_axes(&centered * g);
    let per_channel = |f: &dyn Fn(usize) -> T| ArrayD::from_shape_fn(IxDyn(&[c]), |i| f(i[0]));
    let half = T::from_f64(0.5);
    let d_scale = need[1].then(|| per_channel(&|c| sum_gx[c] * inv[c]));
    let d_bias = need[2].then(|| per_channel(&|c| sum_g[c]));
    let d_mean = need[3].then(|| per_channel(&|c| -sum_g[c] * scale[c] * inv[c]));
    let d_var =
        need[4].then(|| per_channel(&|c| -half * sum_gx[c] * scale[c] * inv[c] * inv[c] * inv[c]));
    vec![dx, d_scale, d_bias, d_mean, d_var]
}
