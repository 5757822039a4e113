//! Training: the AdamW optimizer over a graph's trainable parameters.

use crate::autograd::{Graph, ParamId};
use crate::kernels::adamw::AdamW as Hyper;
use crate::tensor::Result;

pub use crate::kernels::adamw::AdamW as AdamWConfig;

/// AdamW over every trainable parameter of a graph (frozen ones get no state), one moment pair
/// per parameter, stepping each with the AdamW kernel (PyTorch's operation order).
#[derive(Debug)]
pub struct AdamW {
    pub hyper: Hyper,
    /// `(parameter, m, v)`.
    state: Vec<(ParamId, Vec<f32>, Vec<f32>)>,
    step: u64,
}

impl AdamW {
    /// State for the parameters of `graph` that are trainable now.
    pub fn new(graph: &Graph, hyper: Hyper) -> Self {
        let state = graph
            .param_ids()
            .filter(|&p| graph.requires_grad(p) == Some(true))
            .map(|p| {
                let n = graph.param_tensor(p).map_or(0, |t| t.numel());
                (p, vec![0.0; n], vec![0.0; n])
            })
            .collect();
        AdamW {
            hyper,
            state,
            step: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One step from the accumulated gradients (then zeroes them).
    ///
    /// # Errors
    /// When a tape is still recorded on `graph` (call backward or clear first), or a kernel
    /// refuses.
    pub fn step(&mut self, graph: &mut Graph) -> Result<()> {
        self.step += 1;
        let k = graph.kernels();
        for (p, m, v) in &mut self.state {
            let (param, grad) = graph.param_update(*p)?;
            k.adamw(param, grad, m, v, &self.hyper, self.step)?;
        }
        graph.zero_grads();
        Ok(())
    }
}
