//! Gradient slots during backward: where each op's backward rule adds (or, into a fresh slot,
//! writes) the gradients of its inputs.

use super::pool::Pool;
use super::{Node, Value, Var, ops};

/// Gradient slots during backward: node gradients, allocated on first use from the pool, and
/// parameter gradients, which persist (`param_zero[p]`: parameter `p`'s buffer holds stale
/// values standing for a zero gradient, see [`super::Graph::zero_grads`]).
pub(crate) struct Grads<'a> {
    pub(super) nodes: &'a [Node],
    pub(super) node: &'a mut [Option<Vec<f32>>],
    pub(super) params: &'a mut [Vec<f32>],
    pub(super) param_zero: &'a mut [bool],
    pub(super) pool: &'a mut Pool,
}

/// A gradient buffer and whether it is fresh (see [`Grads::slot_or_fresh`]).
pub(crate) type FreshSlot<'a> = (&'a mut [f32], bool);

impl Grads<'_> {
    /// The gradient buffer of `v` to add into, or `None` when no gradient flows to `v`.
    pub(crate) fn slot(&mut self, v: Var) -> Option<&mut [f32]> {
        let n = &self.nodes[v.idx as usize];
        if !n.needs_grad {
            return None;
        }
        match n.value {
            Value::Param(p) => {
                if std::mem::take(&mut self.param_zero[p]) {
                    ops::zero_fill(&mut self.params[p]);
                }
                Some(&mut self.params[p])
            }
            Value::Owned(ref x) => {
                let len = x.len();
                let g = &mut self.node[v.idx as usize];
                Some(g.get_or_insert_with(|| self.pool.take_zeroed(len)))
            }
        }
    }

    /// The gradient buffers of `vars` at once, for a backward rule that fills them in
    /// parallel (`None` for a var no gradient flows to), each with whether it is fresh (as
    /// [`Self::slot_or_fresh`]: to be overwritten in full); `None` overall when two of them
    /// share a buffer (the same node, or the same parameter), which the caller then fills in turn.
    pub(crate) fn slots_disjoint(&mut self, vars: &[Var]) -> Option<Vec<Option<FreshSlot<'_>>>> {
        let key = |v: &Var| match self.nodes[v.idx as usize].value {
            Value::Param(p) => (true, p),
            Value::Owned(_) => (false, v.idx as usize),
        };
        let keys: Vec<(bool, usize)> = vars.iter().map(key).collect();
        if (1..keys.len()).any(|i| keys[..i].contains(&keys[i])) {
            return None;
        }
        // Allocates the node slots and notes which are fresh; the buffers are handed out below,
        // all at once.
        let fresh: Vec<bool> = vars
            .iter()
            .map(|&v| self.slot_or_fresh(v).is_some_and(|(_, fresh)| fresh))
            .collect();
        let mut out: Vec<Option<FreshSlot>> = vars.iter().map(|_| None).collect();
        let wants = |param: bool, i: usize| keys.iter().position(|&k| k == (param, i));
        for (i, g) in self.params.iter_mut().enumerate() {
            if let Some(pos) =
                wants(true, i).filter(|&p| self.nodes[vars[p].idx as usize].needs_grad)
            {
                out[pos] = Some((g.as_mut_slice(), fresh[pos]));
            }
        }
        for (i, g) in self.node.iter_mut().enumerate() {
            if let (Some(pos), Some(g)) = (wants(false, i), g.as_deref_mut()) {
                out[pos] = Some((g, fresh[pos]));
            }
        }
        Some(out)
    }

    /// The gradient buffer of `v` and whether it is fresh: `(buf, true)` when `v` had no
    /// gradient yet (a node's first, or a parameter's since its gradient was last zeroed), and
    /// `buf` holds stale values that the caller must overwrite in full (a GEMM with `beta = 0`),
    /// saving the zeroing pass; `(buf, false)` to add into, as [`Self::slot`].
    pub(crate) fn slot_or_fresh(&mut self, v: Var) -> Option<(&mut [f32], bool)> {
        let n = &self.nodes[v.idx as usize];
        if !n.needs_grad {
            return None;
        }
        match n.value {
            Value::Param(p) => {
                let fresh = std::mem::take(&mut self.param_zero[p]);
                Some((&mut self.params[p], fresh))
            }
            Value::Owned(ref x) => {
                let len = x.len();
                let g = &mut self.node[v.idx as usize];
                let fresh = g.is_none();
                Some((g.get_or_insert_with(|| self.pool.take(len)), fresh))
            }
        }
    }

    /// `grad(v) += src` for a gradient of `v`'s full length. A fresh slot is written with a copy
    /// of `src` instead (no zeroing pass, no read of zeros); `0 + x` and `x` differ only in the
    /// sign of a zero. Does nothing when no gradient flows to `v`.
    pub(crate) fn accumulate(&mut self, v: Var, src: &[f32]) {
        self.accumulate_with(v, src, |x| x);
    }

    /// `grad(v) += f(src)` element-wise, as [`Self::accumulate`] (a fresh slot is written).
    pub(crate) fn accumulate_with(&mut self, v: Var, src: &[f32], f: impl Fn(f32) -> f32 + Sync) {
        if let Some((g, fresh)) = self.slot_or_fresh(v) {
            if fresh {
                ops::zip_apply(g, src, |g, s| *g = f(s));
            } else {
                ops::zip_apply(g, src, |g, s| *g += f(s));
            }
        }
    }

    /// `grad(v) += buf`, taking `buf` (a full-length gradient from the pool): when `v` has no
    /// gradient yet `buf` becomes it, with no copy; otherwise it is added and `buf` returned to
    /// the pool. Does nothing but return `buf` when no gradient flows to `v`.
    pub(crate) fn accumulate_owned(&mut self, v: Var, buf: Vec<f32>) {
        let n = &self.nodes[v.idx as usize];
        let fresh = n.needs_grad
            && matches!(n.value, Value::Owned(_))
            && self.node[v.idx as usize].is_none();
        if fresh {
            self.node[v.idx as usize] = Some(buf);
            return;
        }
        if let Some((g, fresh)) = self.slot_or_fresh(v) {
            if fresh {
                g.copy_from_slice(&buf);
            } else {
                ops::add_into(g, &buf);
            }
        }
        self.pool.give(buf);
    }

    /// A scratch buffer from the pool (stale contents).
    pub(crate) fn scratch(&mut self, len: usize) -> Vec<f32> {
        self.pool.take(len)
    }

    /// A zeroed scratch buffer from the pool (zeroed on every thread when large).
    pub(crate) fn scratch_zeroed(&mut self, len: usize) -> Vec<f32> {
        self.pool.take_zeroed(len)
    }

    /// Returns a scratch buffer.
    pub(crate) fn give(&mut self, v: Vec<f32>) {
        self.pool.give(v)
    }
}
