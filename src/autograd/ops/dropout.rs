//! Inverted dropout with an explicitly passed, seeded RNG.

use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

/// SplitMix64: a small seeded generator, enough for dropout masks; the caller owns it so every
/// run with the same seed draws the same masks.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The generator's state: `Rng::new(r.state())` continues exactly where `r` is.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

impl Graph {
    /// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`.
    /// `// x: (...) -> (...)`. Draws one number per element from `rng`, in element order.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `p` is not in `[0, 1)` or the handle is stale.
    pub fn dropout(&mut self, x: Var, p: f32, rng: &mut Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(shape_err(
                "dropout",
                format!("probability {p} is not in [0, 1)"),
            ));
        }
        let keep = 1.0 / (1.0 - p);
        let shape = self.shape(x)?.to_vec();
        let n = shape.iter().product();
        let mut mask = self.pool().take(n);
        mask.iter_mut()
            .for_each(|m| *m = if rng.next_f32() < p { 0.0 } else { keep });
        let mut y = self.pool().take(n);
        let xv = self.arg("dropout", x)?.0;
        y.iter_mut()
            .zip(xv.iter().zip(&mask))
            .for_each(|(o, (x, m))| *o = x * m);
        if !self.records(&[x]) {
            self.pool().give(mask);
            return Ok(self.push(y, shape, Op::Leaf));
        }
        Ok(self.push(y, shape, Op::Dropout { x, mask }))
    }
}

/// `dx += dy * mask`.
pub(crate) fn backward(c: &mut Ctx, x: Var, mask: &[f32], dy: &[f32]) -> Result<()> {
    if let Some(g) = c.g.slot(x) {
        g.iter_mut()
            .zip(dy.iter().zip(mask))
            .for_each(|(g, (d, m))| *g += d * m);
    }
    Ok(())
}
