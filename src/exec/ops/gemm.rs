//! Gemm (Y = α·A'·B' + β·C, primes for the optional transposes) and MatMul (numpy
//! semantics: 1-D operands promoted, batch dims broadcast).

use ndarray::{Array3, ArrayD, IxDyn};

use super::elementwise::{broadcast_shape, unbroadcast};
use crate::exec::float::{Float, Mat, MatMut, gemm};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub alpha: f64,
    pub beta: f64,
    pub trans_a: bool,
    pub trans_b: bool,
}

fn matrix<T: Float>(a: &ArrayD<T>, what: &str) -> Result<(usize, usize), String> {
    match a.shape() {
        &[r, c] => Ok((r, c)),
        s => Err(format!("{what} must be 2-D, is {s:?}")),
    }
}

fn slice<T: Float>(a: &ArrayD<T>) -> &[T] {
    a.as_slice().expect("executor arrays are contiguous")
}

/// A' and B' as matrices, with (M, K, N).
type Operands<'a, T> = (Mat<'a, T>, Mat<'a, T>, [usize; 3]);

impl Gemm {
    fn operands<'a, T: Float>(
        &self,
        a: &'a ArrayD<T>,
        b: &'a ArrayD<T>,
    ) -> Result<Operands<'a, T>, String> {
        let (ar, ac) = matrix(a, "A")?;
        let (br, bc) = matrix(b, "B")?;
        let a = Mat::new(slice(a), ar, ac).t_if(self.trans_a);
        let b = Mat::new(slice(b), br, bc).t_if(self.trans_b);
        let (m, k) = if self.trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.trans_b { (bc, br) } else { (br, bc) };
        if k != k2 {
            return Err(format!("A' is {m}x{k} and B' is {k2}x{n}"));
        }
        Ok((a, b, [m, k, n]))
    }

    pub(crate) fn forward<T: Float>(
        &self,
        a: &ArrayD<T>,
        b: &ArrayD<T>,
        c: Option<&ArrayD<T>>,
    ) -> Result<ArrayD<T>, String> {
        let (am, bm, [m, _, n]) = self.operands(a, b)?;
        let mut y = match c {
            Some(c) if self.beta != 0.0 => {
                if broadcast_shape(&[m, n], c.shape())? != [m, n] {
                    return Err(format!(
                        "C {:?} does not broadcast to [{m}, {n}]",
                        c.shape()
                    ));
                }
                c.broadcast(IxDyn(&[m, n])).expect("checked").to_owned()
            }
            _ => ArrayD::zeros(IxDyn(&[m, n])),
        };
        let beta = if c.is_some() {
            T::from_f64(self.beta)
        } else {
            T::zero()
        };
        let ys = y.as_slice_mut().expect("fresh array");
        gemm(T::from_f64(self.alpha), am, bm, beta, MatMut::new(ys, m, n));
        Ok(y)
    }

    pub(crate) fn backward<T: Float>(
        &self,
        g: &ArrayD<T>,
        a: &ArrayD<T>,
        b: &ArrayD<T>,
        c_shape: Option<&[usize]>,
        need: [bool; 3],
    ) -> [Option<ArrayD<T>>; 3] {
        let (am, bm, [m, k, n]) = self.operands(a, b).expect("checked in forward");
        let alpha = T::from_f64(self.alpha);
        let gm = Mat::new(slice(g), m, n);
        let da = need[0].then(|| {
            let mut da = ArrayD::zeros(a.raw_dim());
            let out = MatMut::new(
                da.as_slice_mut().expect("fresh"),
                a.shape()[0],
                a.shape()[1],
            );
            gemm(
                alpha,
                gm,
                bm.t(),
                T::zero(),
                if self.trans_a { out.t() } else { out },
            );
            da
        });
        let db = need[1].then(|| {
            let mut db = ArrayD::zeros(b.raw_dim());
            let out = MatMut::new(
                db.as_slice_mut().expect("fresh"),
                b.shape()[0],
                b.shape()[1],
            );
            gemm(
                alpha,
                am.t(),
                gm,
                T::zero(),
                if self.trans_b { out.t() } else { out },
            );
            db
        });
        let dc = c_shape
            .filter(|_| need[2])
            .map(|shape| unbroadcast(g.mapv(|g| g * T::from_f64(self.beta)), shape));
        debug_assert_eq!((m, n), (g.shape()[0], g.shape()[1]), "k = {k}");
        [da, db, dc]
    }
}

/// Operands of a MatMul as stacks of matrices over the broadcast batch dims.
struct Batched {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// 1-D operands were promoted: their unit dim is dropped from the result.
    drop_m: bool,
    drop_n: bool,
}

impl Batched {
    fn new(a: &[usize], b: &[usize]) -> Result<Batched, String> {
        if a.is_empty() || b.is_empty() {
            return Err("MatMul of a scalar".into());
        }
        let (drop_m, drop_n) = (a.len() == 1, b.len() == 1);
        let a2 = if drop_m { vec![1, a[0]] } else { a.to_vec() };
        let b2 = if drop_n { vec![b[0], 1] } else { b.to_vec() };
        let (ra, rb) = (a2.len(), b2.len());
        let (m, k, k2, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 2], b2[rb - 1]);
        if k != k2 {
            return Err(format!("MatMul of {a:?} and {b:?}: inner dims differ"));
        }
        let batch = broadcast_shape(&a2[..ra - 2], &b2[..rb - 2])?;
        Ok(Batched {
            batch,
            m,
            k,
            n,
            drop_m,
            drop_n,
        })
    }

    fn count(&self) -> usize {
        self.batch.iter().product()
    }

    /// An operand broadcast to [batch, rows, cols].
    fn stack<T: Float>(&self, x: &ArrayD<T>, rows: usize, cols: usize) -> Array3<T> {
        let full: Vec<usize> = self.batch.iter().copied().chain([rows, cols]).collect();
        let x = x
            .to_shape(self.promoted(x.shape(), rows, cols))
            .expect("contiguous");
        let wide = x.broadcast(IxDyn(&full)).expect("checked broadcast");
        wide.as_standard_layout()
            .into_owned()
            .into_shape_with_order((self.count(), rows, cols))
            .expect("contiguous")
    }

    fn promoted(&self, shape: &[usize], rows: usize, cols: usize) -> Vec<usize> {
        if shape.len() == 1 {
            vec![rows, cols]
        } else {
            shape.to_vec()
        }
    }

    fn output_shape(&self) -> Vec<usize> {
        let mut shape = self.batch.clone();
        if !self.drop_m {
            shape.push(self.m);
        }
        if !self.drop_n {
            shape.push(self.n);
        }
        shape
    }
}

/// out[i] = x[i]' · y[i]' for each matrix of two stacks.
fn stacked_product<T: Float>(x: &Array3<T>, tx: bool, y: &Array3<T>, ty: bool) -> Array3<T> {
    let (count, xr, xc) = x.dim();
    let (_, yr, yc) = y.dim();
    let (rows, cols) = (if tx { xc } else { xr }, if ty { yr } else { yc });
    let mut out = Array3::zeros((count, rows, cols));
    let (xs, ys) = (x.as_slice().expect("fresh"), y.as_slice().expect("fresh"));
    let os = out.as_slice_mut().expect("fresh");
    for i in 0..count {
        let xm = Mat::new(&xs[i * xr * xc..][..xr * xc], xr, xc).t_if(tx);
        let ym = Mat::new(&ys[i * yr * yc..][..yr * yc], yr, yc).t_if(ty);
        gemm(
            T::one(),
            xm,
            ym,
            T::zero(),
            MatMut::new(&mut os[i * rows * cols..][..rows * cols], rows, cols),
        );
    }
    out
}

pub(crate) fn matmul_forward<T: Float>(a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>, String> {
    let bt = Batched::new(a.shape(), b.shape())?;
    let out = stacked_product(
        &bt.stack(a, bt.m, bt.k),
        false,
        &bt.stack(b, bt.k, bt.n),
        false,
    );
    Ok(out
        .into_shape_with_order(IxDyn(&bt.output_shape()))
        .expect("same count"))
}

pub(crate) fn matmul_backward<T: Float>(
    g: &ArrayD<T>,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    need: [bool; 2],
) -> [Option<ArrayD<T>>; 2] {
    let bt = Batched::new(a.shape(), b.shape()).expect("checked in forward");
    let g3 = g
        .to_shape((bt.count(), bt.m, bt.n))
        .expect("contiguous")
        .into_owned();
    // The gradient of a stacked operand, summed over the batch dims it was broadcast along.
    let reduce = |full: Array3<T>, shape: &[usize], rows: usize, cols: usize| {
        let full_shape: Vec<usize> = bt.batch.iter().copied().chain([rows, cols]).collect();
        let full = full
            .into_shape_with_order(IxDyn(&full_shape))
            .expect("same count");
        let promoted = bt.promoted(shape, rows, cols);
        unbroadcast(full, &promoted)
            .into_shape_with_order(IxDyn(shape))
            .expect("same count")
    };
    let da = need[0].then(|| {
        let full = stacked_product(&g3, false, &bt.stack(b, bt.k, bt.n), true);
        reduce(full, a.shape(), bt.m, bt.k)
    });
    let db = need[1].then(|| {
        let full = stacked_product(&bt.stack(a, bt.m, bt.k), true, &g3, false);
        reduce(full, b.shape(), bt.k, bt.n)
    });
    [da, db]
}
