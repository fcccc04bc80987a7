//! Injectable randomness: jitter for retries and open circuits, fresh idempotency keys.
//!
//! Every layer that draws a random number takes a [`JitterRng`], so a test can seed it and get
//! the same delays every run.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Where jitter draws its random numbers. Clones share one generator.
///
/// The default is the thread-local generator ([`rand::rng`]); tests pass a seeded one so that
/// every delay is reproducible:
///
/// ```
/// use tollway_core::JitterRng;
///
/// let a = JitterRng::seeded(7);
/// let b = JitterRng::seeded(7);
/// assert_eq!(a.unit(), b.unit());
/// ```
#[derive(Clone, Default)]
pub struct JitterRng {
    shared: Option<Arc<Mutex<Box<dyn RngCore + Send>>>>,
}

impl JitterRng {
    /// The thread-local generator: no lock, not reproducible.
    pub fn thread_local() -> Self {
        Self { shared: None }
    }

    /// A [`StdRng`] seeded with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self::from_rng(StdRng::seed_from_u64(seed))
    }

    /// Any generator, shared behind a lock by all clones.
    pub fn from_rng(rng: impl RngCore + Send + 'static) -> Self {
        Self {
            shared: Some(Arc::new(Mutex::new(Box::new(rng)))),
        }
    }

    /// A number uniformly drawn from `[0, 1)`.
    #[inline]
    pub fn unit(&self) -> f64 {
        match &self.shared {
            None => rand::rng().random::<f64>(),
            Some(shared) => shared.lock().random::<f64>(),
        }
    }

    /// 128 random bits, hex-encoded (32 characters): a fresh `Idempotency-Key`.
    pub fn hex_key(&self) -> String {
        let value: u128 = match &self.shared {
            None => rand::rng().random(),
            Some(shared) => shared.lock().random(),
        };
        format!("{value:032x}")
    }
}

impl fmt::Debug for JitterRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.shared.is_some() {
            "JitterRng(shared)"
        } else {
            "JitterRng(thread_local)"
        })
    }
}
