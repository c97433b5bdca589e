//! Buffers kept between passes: a training step allocates and frees the same large
//! tensors every time, and the allocator hands such sizes back to the system, so each
//! step would fault every page in again. Buffers are keyed by element type and capacity.
//! A buffer taken from the pool holds stale values: callers overwrite every element (or
//! zero the buffer first), so results never depend on what the pool held.
//!
//! A request no free buffer of its exact size meets takes a free one up to a quarter
//! larger: a batch one sample short of the others (an epoch's last, or the held-out data's
//! last part) then runs in the buffers the full batches left, instead of a set of its own.
//!
//! The pool keeps no more buffers of a capacity than were ever out at once: arrays made
//! outside the pool are given back too, and a pool keeping them all would grow with every
//! pass (with the number of samples measured, not with the model).

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Mutex;

use ndarray::{ArrayD, IxDyn};

use super::float::Float;

/// Buffers smaller than this are left to the allocator: pooling them saves nothing.
const MIN_POOLED: usize = 1 << 12;

/// How much larger than a request a free buffer may be and still be handed out for it.
const SLACK: usize = 4;

/// Buffers of one element type and capacity: the free ones (each a boxed `Vec<T>`), how many
/// are out, and the most that ever were.
#[derive(Default)]
struct Sized {
    free: Vec<Box<dyn Any + Send>>,
    out: usize,
    most_out: usize,
}

type FreeLists = BTreeMap<(TypeId, usize), Sized>;

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
        if len < MIN_POOLED {
            return vec![T::zero(); len];
        }
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let kind = TypeId::of::<T>();
            let capacity = free
                .range((kind, len)..=(kind, len + len / SLACK))
                .find(|(_, sized)| !sized.free.is_empty())
                .map_or(len, |(&(_, capacity), _)| capacity);
            let sized = free.entry((kind, capacity)).or_default();
            sized.out += 1;
            sized.most_out = sized.most_out.max(sized.out);
            sized.free.pop()
        };
        match reused.and_then(|b| b.downcast::<Vec<T>>().ok()) {
            Some(mut buffer) => {
                buffer.resize(len, T::zero());
                *buffer
            }
            None => vec![T::zero(); len],
        }
    }

    /// A standard-layout array of `dims` with unspecified values, as `take`.
    pub(crate) fn array<T: Float>(&self, dims: &[usize]) -> ArrayD<T> {
        let buffer = self.take(dims.iter().product());
        ArrayD::from_shape_vec(IxDyn(dims), buffer).expect("length is the dims' product")
    }

    pub(crate) fn give<T: Float>(&self, buffer: Vec<T>) {
        let capacity = buffer.capacity();
        if capacity < MIN_POOLED {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let sized = free.entry((TypeId::of::<T>(), capacity)).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: usize = 16 * MIN_POOLED;

    #[test]
    fn a_request_a_little_short_runs_in_a_free_larger_buffer() {
        let pool = BufferPool::default();
        let full: Vec<f32> = pool.take(FULL);
        let address = full.as_ptr();
        pool.give(full);
        let short: Vec<f32> = pool.take(FULL - FULL / 16);
        assert_eq!((short.len(), short.as_ptr()), (FULL - FULL / 16, address));
        pool.give(short);
        let again: Vec<f32> = pool.take(FULL);
        assert_eq!((again.len(), again.as_ptr()), (FULL, address));
    }

    #[test]
    fn a_much_smaller_request_gets_its_own_buffer_and_an_exact_fit_comes_first() {
        let pool = BufferPool::default();
        let (full, short): (Vec<f32>, Vec<f32>) = (pool.take(FULL), pool.take(FULL - 1));
        let (full_at, short_at) = (full.as_ptr(), short.as_ptr());
        pool.give(full);
        pool.give(short);
        let quarter: Vec<f32> = pool.take(FULL / 4);
        assert!(![full_at, short_at].contains(&quarter.as_ptr()));
        let exact: Vec<f32> = pool.take(FULL - 1);
        assert_eq!(exact.as_ptr(), short_at);
    }

    #[test]
    fn no_more_buffers_of_a_capacity_are_kept_than_were_out_at_once() {
        let pool = BufferPool::default();
        pool.give(pool.take::<f32>(FULL));
        pool.give(vec![0.0f32; FULL]);
        let free = pool.free.lock().unwrap();
        assert_eq!(free[&(TypeId::of::<f32>(), FULL)].free.len(), 1);
    }
}
