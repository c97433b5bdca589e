//! Calibration and verification data: `.npy`/`.npz` files, image preprocessing, and
//! seeded random inputs.

pub mod random;
