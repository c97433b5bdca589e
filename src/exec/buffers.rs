//! Buffers kept between passes: a training step allocates and frees the same large
//! tensors every time, and the allocator hands such sizes back to the system, so each
//! step would fault every page in again. Buffers are keyed by element type and length.
//! A buffer taken from the pool holds stale values: callers overwrite every element (or
//! zero the buffer first), so results never depend on what the pool held.
//!
//! The pool keeps no more buffers of a size than were ever out at once: arrays made
//! outside the pool are given back too, and a pool keeping them all would grow with every
//! pass (with the number of samples measured, not with the model).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Mutex;

use ndarray::{ArrayD, IxDyn};

use super::float::Float;

/// Buffers smaller than this are left to the allocator: pooling them saves nothing.
const MIN_POOLED: usize = 1 << 12;

/// Buffers of one element type and length: the free ones (each a boxed `Vec<T>`), how many
/// are out, and the most that ever were.
#[derive(Default)]
struct Sized {
    free: Vec<Box<dyn Any + Send>>,
    out: usize,
    most_out: usize,
}

type FreeLists = HashMap<(TypeId, usize), Sized>;

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<FreeLists>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BufferPool")
    }
}

impl BufferPool {
    /// A buffer of `len` elements whose values are unspecified (zeros when fresh).
    pub(crate) fn take<T: Float>(&self, len: usize) -> Vec<T> {
        let reused = (len >= MIN_POOLED)
            .then(|| {
                let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
                let sized = free.entry((TypeId::of::<T>(), len)).or_default();
                sized.out += 1;
                sized.most_out = sized.most_out.max(sized.out);
                sized.free.pop()
            })
            .flatten()
            .and_then(|b| b.downcast::<Vec<T>>().ok());
        reused.map_or_else(|| vec![T::zero(); len], |b| *b)
    }

    /// A standard-layout array of `dims` with unspecified values, as `take`.
    pub(crate) fn array<T: Float>(&self, dims: &[usize]) -> ArrayD<T> {
        let buffer = self.take(dims.iter().product());
        ArrayD::from_shape_vec(IxDyn(dims), buffer).expect("length is the dims' product")
    }

    pub(crate) fn give<T: Float>(&self, buffer: Vec<T>) {
        let len = buffer.len();
        if len < MIN_POOLED || buffer.capacity() != len {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let sized = free.entry((TypeId::of::<T>(), len)).or_default();
        sized.out = sized.out.saturating_sub(1);
        if sized.free.len() < sized.most_out {
            sized.free.push(Box::new(buffer));
        }
    }

    /// Returns an array's buffer when the array owns all of it.
    pub(crate) fn give_array<T: Float>(&self, array: ArrayD<T>) {
        if array.is_standard_layout() {
            let (buffer, offset) = array.into_raw_vec_and_offset();
            if offset.unwrap_or(0) == 0 {
                self.give(buffer);
            }
        }
    }
}
