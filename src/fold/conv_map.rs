//! An affine map between feature maps as one convolution: the running result of folding
//! a chain of linear layers. Any such chain is f(x) = L(x) + f(0) with L linear; L stays
//! one convolution (see `conv::compose` for when that is exact at the border), and f(0),
//! the chain evaluated on a zero input, is a per-channel bias in the interior but may vary
//! near the border once zero padding has met a bias. It is kept as a per-position bias
//! map when it does (needs static spatial dims), and as a plain bias when it does not.
//!
//! An average pool that leaves its padding out of the count (`count_include_pad = 0`;
//! `docs/ARCHITECTURE.md`, folding rule 7, pools) divides each window by the number of
//! taps inside the input, k² only in the interior: it is the pool that counts its
//! padding (a convolution of weights 1/k²) followed by a per-position scale k²/n(y, x),
//! the same for every channel. The scale is exact (static spatial dims) but no
//! convolution, so it ends a fold.

use crate::error::{Error, Result};
use crate::fold::conv::{self, Border, Conv2d, FeatureMap};

#[derive(Clone, Debug, PartialEq)]
pub struct ConvMap {
    /// The linear part, with the interior bias.
    pub conv: Conv2d,
    /// f(0) where it is not constant per channel: the output's exact bias.
    pub bias_map: Option<FeatureMap>,
    /// `Exact`, or `InteriorOnly` once a padded layer followed a mixing one.
    pub border: Border,
    /// A factor per output position, one channel broadcast over all: the divisor of an
    /// average pool that excludes its padding, applied last.
    pub position_scale: Option<FeatureMap>,
    /// Spatial dims of the input, when static.
    input_hw: Option<[usize; 2]>,
}

impl ConvMap {
    /// x ↦ x on `channels` channels.
    pub fn identity(channels: usize, input_hw: Option<[usize; 2]>) -> ConvMap {
        ConvMap {
            conv: Conv2d::identity(channels),
            bias_map: None,
            border: Border::Exact,
            position_scale: None,
            input_hw,
        }
    }

    fn output_hw(&self) -> Option<[usize; 2]> {
        let hw = self.input_hw?;
        Some([
            self.conv.output_size(0, hw[0])?,
            self.conv.output_size(1, hw[1])?,
        ])
    }

    /// f(0) as a feature map.
    fn zero_response(&self) -> Option<FeatureMap> {
        match &self.bias_map {
            Some(map) => Some(map.clone()),
            None => Some(FeatureMap::uniform(&self.conv.bias, self.output_hw()?)),
        }
    }

    /// Following it by `next` needs a per-position bias map (`next` pads what a bias
    /// reached), and its spatial dims are not known.
    pub fn needs_static_dims(&self, next: &Conv2d) -> bool {
        self.input_hw.is_none() && next.is_padded() && self.has_bias()
    }

    fn has_bias(&self) -> bool {
        self.bias_map.is_some() || self.conv.bias.iter().any(|&b| b != 0.0)
    }

    /// This map followed by `next`.
    pub fn then(&self, next: &Conv2d) -> Result<ConvMap> {
        if self.position_scale.is_some() {
            return Err(Error::graph(
                "a per-position pool divisor ends a fold: nothing composes after it",
            ));
        }
        let (mut linear, border) = conv::compose(&self.conv.without_bias(), &next.without_bias())?;
        let bias_map = if self.bias_map.is_none() && !(next.is_padded() && self.has_bias()) {
            // f(0) is constant per channel: the interior formula is exact everywhere.
            linear.bias = conv::compose_bias(&self.conv, next);
            None
        } else {
            let response = self
                .zero_response()
                .and_then(|r| next.apply(&r))
                .ok_or_else(|| {
                    Error::graph("folding this chain needs static spatial dims for its border bias")
                })?;
            match response.as_uniform() {
                Some(bias) => {
                    linear.bias = bias;
                    None
                }
                None => Some(response),
            }
        };
        Ok(ConvMap {
            conv: linear,
            bias_map,
            border: worst(self.border, border),
            position_scale: None,
            input_hw: self.input_hw,
        })
    }

    /// This map followed by an average pool that excludes its padding from the count,
    /// given as `pool`, the convolution that counts it: `pool` composed, then the scale
    /// k²/n(y, x) with n the taps inside the pool's input. Needs static spatial dims.
    pub fn then_pool_excluding_pads(&self, pool: &Conv2d) -> Result<ConvMap> {
        let hw = self.output_hw().ok_or_else(|| {
            Error::graph(
                "an average pool that excludes its padding folds only at static spatial dims",
            )
        })?;
        let mut map = self.then(pool)?;
        let taps = pool.kernel[0] * pool.kernel[1];
        let counting = Conv2d {
            weight: vec![1.0; taps],
            bias: vec![0.0],
            out_channels: 1,
            in_channels: 1,
            group: 1,
            ..pool.clone()
        };
        let inside = counting
            .apply(&FeatureMap::uniform(&[1.0], hw))
            .filter(|n| n.values.iter().all(|&n| n > 0.0))
            .ok_or_else(|| Error::graph("an average pool window lies wholly in its padding"))?;
        map.position_scale = Some(FeatureMap {
            values: inside.values.iter().map(|n| taps as f64 / n).collect(),
            ..inside
        });
        Ok(map)
    }

    /// x ↦ self(x) + other(x), when both line up (see `conv::sum`).
    pub fn plus(&self, other: &ConvMap) -> Option<ConvMap> {
        if self.position_scale.is_some() || other.position_scale.is_some() {
            return None;
        }
        let mut conv = conv::sum(&self.conv, &other.conv)?;
        let bias_map = if self.bias_map.is_none() && other.bias_map.is_none() {
            None
        } else {
            let (a, b) = (self.zero_response()?, other.zero_response()?);
            let summed = FeatureMap {
                values: a.values.iter().zip(&b.values).map(|(x, y)| x + y).collect(),
                ..a
            };
            conv.bias = vec![0.0; conv.out_channels];
            Some(summed)
        };
        Some(ConvMap {
            conv,
            bias_map,
            border: worst(self.border, other.border),
            position_scale: None,
            input_hw: self.input_hw,
        })
    }

    /// The convolution to emit: without bias when a bias map carries it.
    pub fn emitted_conv(&self) -> Conv2d {
        match self.bias_map {
            Some(_) => self.conv.without_bias(),
            None => self.conv.clone(),
        }
    }
}

fn worst(a: Border, b: Border) -> Border {
    if a == Border::InteriorOnly || b == Border::InteriorOnly {
        Border::InteriorOnly
    } else {
        Border::Exact
    }
}
