//! Tape-based reverse-mode autograd: the [`Graph`] (tape, parameters, buffer pool), the [`Var`]
//! handle and [`Graph::backward`].
//!
//! Every op appends one node (its value and shape) and one [`op::Op`] (its inputs and what its
//! backward needs) to the tape; nodes are in creation order, which is a topological order, so
//! backward walks the tape once in reverse. Gradients are ADDED into (`+=`), so a value used twice
//! sums both contributions. Parameters live in the graph across steps; their gradients accumulate
//! until [`Graph::zero_grads`]. After backward (or [`Graph::clear`]) the tape is dropped and every
//! buffer goes back to a pool keyed by length, so the next step allocates nothing new.
//!
//! Op forwards are methods on [`Graph`] defined next to their backward in `ops/<family>.rs`.

mod grads;
pub(crate) mod op;
pub mod ops;
mod pool;

use crate::kernels::{Kernels, MatRef};
use crate::tensor::{Error, Result, Tensor};
pub(crate) use grads::Grads;
use op::Op;
use ops::zero_fill;
use pool::Pool;

pub use crate::kernels::attention::AttnSpec;
pub use crate::kernels::cross_entropy::IGNORE_INDEX;
pub use crate::kernels::gelu::Gelu;
pub use crate::kernels::softmax::CausalMask;
pub use ops::attention::AttnConfig;
pub use ops::dropout::Rng;
pub use ops::qlinear::QParamId;

/// A value on the tape: an index plus the tape generation it belongs to, so a handle kept past
/// [`Graph::backward`] or [`Graph::clear`] is refused instead of reading another value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var {
    idx: u32,
    generation: u32,
}

/// A parameter of the graph: persists across steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// Its position among the graph's parameters (the order they were added).
    pub fn index(self) -> usize {
        self.0
    }
}

/// Where a node's value lives.
#[derive(Debug)]
pub(crate) enum Value {
    /// Computed by an op or given as an input, in a pooled buffer.
    Owned(Vec<f32>),
    /// A parameter's value, read in place (never copied onto the tape).
    Param(usize),
}

/// One tape entry's value.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) shape: Vec<usize>,
    pub(crate) value: Value,
    /// Whether a gradient flows to this node (a trainable leaf or a function of one).
    pub(crate) needs_grad: bool,
    /// Whether [`Graph::release`] returned its buffer to the pool.
    released: bool,
}

/// One parameter: value, shape, gradient (allocated while trainable) and name.
#[derive(Debug)]
struct Param {
    name: String,
    shape: Vec<usize>,
    /// Shared with the tensor it was made from (a mapped checkpoint stays mapped); copied to owned
    /// f32 on the first update.
    value: Tensor,
    requires_grad: bool,
    /// The value packed as a GEMM B operand for no-grad Linears (`ops::matmul`), with the
    /// orientation it was packed in (`in_out`); dropped whenever the value may change. A second
    /// copy of each weight a prompt's forward multiplies (GPT-2 124M: 340 MB beside its 500 MB
    /// of f32 weights; decode steps read the weights in place and pack nothing).
    packed: Option<(bool, crate::kernels::gemm::PackedB)>,
    /// The value is the transpose of the parameter's checkpoint form (a GPT-2 `Conv1D` weight
    /// laid out `(out, in)` for decoding: `ops::qlinear`'s `transpose_param`).
    transposed: bool,
}

impl Param {
    /// The value for writing; the packed copy is dropped first.
    fn value_mut(&mut self) -> &mut [f32] {
        self.packed = None;
        self.value.make_mut()
    }
}

/// Read-only view of all values during backward.
pub(crate) struct Vals<'a> {
    nodes: &'a [Node],
    params: &'a [Param],
}

impl Vals<'_> {
    /// The value of `v` (already validated when the op was recorded).
    pub(crate) fn get(&self, v: Var) -> &[f32] {
        match &self.nodes[v.idx as usize].value {
            Value::Owned(x) => x,
            Value::Param(p) => self.params[*p].value.as_slice(),
        }
    }

    pub(crate) fn shape(&self, v: Var) -> &[usize] {
        &self.nodes[v.idx as usize].shape
    }
}

/// A parameter's gradient buffer `g` as read: `zeros` when it is marked zero.
fn read_grad<'a>(g: &'a [f32], zero: bool, zeros: &'a [f32]) -> &'a [f32] {
    if zero { &zeros[..g.len()] } else { g }
}

/// Gradients of the trainable inputs (leaves made with [`Graph::input`] and `requires_grad`),
/// returned by [`Graph::backward`]. Parameter gradients stay in the graph.
#[derive(Debug, Default)]
pub struct Gradients {
    grads: Vec<(Var, Vec<f32>)>,
}

impl Gradients {
    /// The gradient of input `v`, or `None` when `v` is not a trainable input or got no gradient.
    pub fn get(&self, v: Var) -> Option<&[f32]> {
        self.grads
            .iter()
            .find(|(w, _)| *w == v)
            .map(|(_, g)| g.as_slice())
    }
}

/// The tape, the parameters and the buffer pool.
#[derive(Debug)]
pub struct Graph {
    kernels: Kernels,
    grad_enabled: bool,
    generation: u32,
    nodes: Vec<Node>,
    ops: Vec<Op>,
    /// Ops on the tape that have a backward (not [`Op::Leaf`]).
    recorded: usize,
    params: Vec<Param>,
    param_grads: Vec<Vec<f32>>,
    /// Per parameter: its gradient buffer holds stale values standing for zeros (see
    /// [`Graph::zero_grads`]).
    grad_zero: Vec<bool>,
    /// Zeros as long as the longest gradient: what a zero gradient reads as. Allocated zeroed,
    /// and only ever read, so its pages stay the kernel's shared zero page.
    zeros: Vec<f32>,
    /// Packed int8 weights of quantized Linears (`ops::qlinear`).
    qweights: Vec<crate::kernels::qgemm::QWeights>,
    pool: Pool,
}

impl Graph {
    /// An empty graph on the process-wide kernels.
    ///
    /// # Errors
    /// [`Error::Kernel`] when `ANVIL_ISA` is malformed or names a tier the CPU lacks.
    pub fn new() -> Result<Self> {
        Ok(Self::with_kernels(crate::kernels::kernels()?))
    }

    /// An empty graph on the given kernels.
    pub fn with_kernels(kernels: Kernels) -> Self {
        Graph {
            kernels,
            grad_enabled: true,
            generation: 0,
            nodes: Vec::new(),
            ops: Vec::new(),
            recorded: 0,
            params: Vec::new(),
            param_grads: Vec::new(),
            grad_zero: Vec::new(),
            zeros: Vec::new(),
            qweights: Vec::new(),
            pool: Pool::default(),
        }
    }

    /// Turns recording on (`true`, the default) or off. With recording off, ops compute values
    /// only: no op is recorded, nothing is saved for backward and no gradient can flow.
    pub fn set_grad_enabled(&mut self, on: bool) {
        self.grad_enabled = on;
    }

    /// Runs `f` with recording off, then restores the previous setting.
    pub fn no_grad<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was = std::mem::replace(&mut self.grad_enabled, false);
        let r = f(self);
        self.grad_enabled = was;
        r
    }

    /// Whether ops are being recorded.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Number of nodes on the tape.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of recorded ops that have a backward (leaves and no-grad values excluded).
    pub fn recorded_ops(&self) -> usize {
        self.recorded
    }

    /// Bytes held by free buffers in the pool.
    pub fn pooled_bytes(&self) -> usize {
        self.pool.bytes()
    }

    /// The kernels this graph runs on.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    // ---- parameters ---------------------------------------------------------------------

    /// Adds a parameter holding `value`'s values (sharing its storage: no copy until the first
    /// update); `requires_grad: false` freezes it.
    pub fn add_param(&mut self, name: &str, value: &Tensor, requires_grad: bool) -> ParamId {
        self.params.push(Param {
            name: name.to_string(),
            shape: value.shape().to_vec(),
            value: value.clone(),
            requires_grad,
            packed: None,
            transposed: false,
        });
        let len = if requires_grad { value.numel() } else { 0 };
        self.param_grads.push(vec![0.0; len]);
        self.grad_zero.push(false);
        self.grow_zeros(len);
        ParamId(self.params.len() - 1)
    }

    /// Freezes (`false`) or unfreezes a parameter. A frozen parameter gets no gradient.
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id, or while a tape is recorded (its nodes decided at
    /// recording time whether a gradient flows to the parameter).
    pub fn set_requires_grad(&mut self, p: ParamId, on: bool) -> Result<()> {
        let n = self.param_ref(p)?.value.numel();
        self.check_no_tape("set_requires_grad")?;
        self.params[p.0].requires_grad = on;
        self.param_grads[p.0] = vec![0.0; if on { n } else { 0 }];
        self.grad_zero[p.0] = false;
        self.grow_zeros(n);
        Ok(())
    }

    fn grow_zeros(&mut self, len: usize) {
        if self.zeros.len() < len {
            self.zeros = vec![0.0; len];
        }
    }

    /// Parameter `p`'s gradient, writable: a zero gradient's buffer is zeroed first.
    fn grad_buf(&mut self, p: ParamId) -> &mut [f32] {
        if std::mem::take(&mut self.grad_zero[p.0]) {
            zero_fill(&mut self.param_grads[p.0]);
        }
        &mut self.param_grads[p.0]
    }

    /// Parameter `p`'s gradient, read-only (a zero gradient reads from `zeros`).
    fn grad_ref(&self, p: ParamId) -> &[f32] {
        read_grad(&self.param_grads[p.0], self.grad_zero[p.0], &self.zeros)
    }

    /// Puts a parameter on the tape (no copy).
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn param(&mut self, p: ParamId) -> Result<Var> {
        let pr = self.param_ref(p)?;
        let node = Node {
            shape: pr.shape.clone(),
            value: Value::Param(p.0),
            needs_grad: self.grad_enabled && pr.requires_grad,
            released: false,
        };
        Ok(self.push_node(node, Op::Leaf))
    }

    /// Name, shape and value of a parameter.
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn param_value(&self, p: ParamId) -> Result<(&str, &[usize], &[f32])> {
        let pr = self.param_ref(p)?;
        Ok((&pr.name, &pr.shape, pr.value.as_slice()))
    }

    /// A parameter's value as a tensor (shares its storage; cheap to clone).
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn param_tensor(&self, p: ParamId) -> Result<&Tensor> {
        Ok(&self.param_ref(p)?.value)
    }

    /// Every parameter, in the order they were added.
    pub fn param_ids(&self) -> impl Iterator<Item = ParamId> + use<> {
        (0..self.params.len()).map(ParamId)
    }

    /// Whether a parameter is trainable (`None` for an unknown id).
    pub fn requires_grad(&self, p: ParamId) -> Option<bool> {
        self.params.get(p.0).map(|pr| pr.requires_grad)
    }

    /// The accumulated gradient of a parameter, `None` when frozen.
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn param_grad(&self, p: ParamId) -> Result<Option<&[f32]>> {
        let pr = self.param_ref(p)?;
        Ok(pr.requires_grad.then(|| self.grad_ref(p)))
    }

    /// The value to update and the gradient, for an optimizer step.
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id, or while a tape is recorded (its saved activations
    /// read parameters in place, so changing one would corrupt the pending backward).
    pub fn param_update(&mut self, p: ParamId) -> Result<(&mut [f32], &[f32])> {
        self.param_ref(p)?;
        self.check_no_tape("param_update")?;
        let grad = read_grad(&self.param_grads[p.0], self.grad_zero[p.0], &self.zeros);
        Ok((self.params[p.0].value_mut(), grad))
    }

    /// The value to update and the gradient, both writable: for an optimizer that zeroes the
    /// gradient in the same pass as its update (an untrainable parameter has an empty gradient).
    ///
    /// # Errors
    /// As [`Graph::param_update`].
    pub fn param_and_grad_mut(&mut self, p: ParamId) -> Result<(&mut [f32], &mut [f32])> {
        self.param_ref(p)?;
        self.check_no_tape("param_and_grad_mut")?;
        self.grad_buf(p);
        Ok((self.params[p.0].value_mut(), &mut self.param_grads[p.0]))
    }

    /// The accumulated gradient of a parameter for in-place edits (clipping, scaling), `None`
    /// when frozen.
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn param_grad_mut(&mut self, p: ParamId) -> Result<Option<&mut [f32]>> {
        let rg = self.param_ref(p)?.requires_grad;
        Ok(rg.then(|| self.grad_buf(p)))
    }

    /// Zeroes every parameter gradient, lazily: each buffer is only marked zero, and the next
    /// backward writes it instead of adding into it (a weight's gradient GEMM then runs with
    /// `beta = 0`, reading nothing of it), or zeroes it first when an op can only add.
    /// Reading a zero gradient gives zeros.
    pub fn zero_grads(&mut self) {
        self.grad_zero.iter_mut().for_each(|z| *z = true);
    }

    /// Zeroes one parameter's gradient, lazily (as [`Graph::zero_grads`]).
    ///
    /// # Errors
    /// [`Error::Shape`] for an unknown id.
    pub fn zero_grad(&mut self, p: ParamId) -> Result<()> {
        self.param_ref(p)?;
        self.grad_zero[p.0] = true;
        Ok(())
    }

    fn check_no_tape(&self, op: &'static str) -> Result<()> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        Err(Error::Shape {
            op,
            detail: format!(
                "{} nodes still on the tape: call backward or clear",
                self.len()
            ),
        })
    }

    fn param_ref(&self, p: ParamId) -> Result<&Param> {
        self.params.get(p.0).ok_or_else(|| Error::Shape {
            op: "param",
            detail: format!("no parameter {} (graph has {})", p.0, self.params.len()),
        })
    }

    // ---- values -------------------------------------------------------------------------

    /// Puts an input on the tape (copied into a pooled buffer). `requires_grad` asks for its
    /// gradient in the [`Gradients`] that [`Graph::backward`] returns.
    pub fn input(&mut self, t: &Tensor, requires_grad: bool) -> Var {
        let value = self.pool.copy_of(t.as_slice());
        self.leaf(value, t.shape().to_vec(), requires_grad)
    }

    /// A leaf from a pooled buffer.
    pub(crate) fn leaf(&mut self, value: Vec<f32>, shape: Vec<usize>, rg: bool) -> Var {
        let node = Node {
            shape,
            value: Value::Owned(value),
            needs_grad: self.grad_enabled && rg,
            released: false,
        };
        self.push_node(node, Op::Leaf)
    }

    /// The value of `v`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `v` belongs to a cleared tape.
    pub fn value(&self, v: Var) -> Result<&[f32]> {
        let n = self.node("value", v)?;
        Ok(match &n.value {
            Value::Owned(x) => x,
            Value::Param(p) => self.params[*p].value.as_slice(),
        })
    }

    /// The shape of `v`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `v` belongs to a cleared tape.
    pub fn shape(&self, v: Var) -> Result<&[usize]> {
        Ok(&self.node("shape", v)?.shape)
    }

    /// The value of `v` as a fresh tensor.
    ///
    /// # Errors
    /// [`Error::Shape`] when `v` belongs to a cleared tape.
    pub fn tensor(&self, v: Var) -> Result<Tensor> {
        Tensor::from_vec(self.value(v)?.to_vec(), self.shape(v)?)
    }

    /// The node of `v`, checked against the current generation.
    pub(crate) fn node(&self, op: &'static str, v: Var) -> Result<&Node> {
        match self.nodes.get(v.idx as usize) {
            Some(n) if v.generation == self.generation && !n.released => Ok(n),
            Some(_) if v.generation == self.generation => Err(Error::Shape {
                op,
                detail: format!("{v:?} was released"),
            }),
            _ => Err(Error::Shape {
                op,
                detail: format!("stale handle {v:?}: its tape was cleared"),
            }),
        }
    }

    /// Makes sure the parameter behind `v` (if it is one) holds its value packed as the GEMM B
    /// operand of `x W` (`in_out`, `W: (IN, OUT)`) or of `x W^T` (`W: (OUT, IN)`), packing it on
    /// first use; returns whether it does. The packed copy lives until the value is written.
    ///
    /// # Errors
    /// [`Error::Shape`] when `v` is stale or the parameter is not 2-D.
    pub(crate) fn pack_param(&mut self, v: Var, in_out: bool) -> Result<bool> {
        let Value::Param(p) = self.node("pack_param", v)?.value else {
            return Ok(false);
        };
        let kernels = self.kernels;
        let pr = &mut self.params[p];
        if matches!(&pr.packed, Some((io, _)) if *io == in_out) {
            return Ok(true);
        }
        let &[r, c] = pr.shape.as_slice() else {
            return Err(Error::Shape {
                op: "pack_param",
                detail: format!("parameter {} is {:?}, not a matrix", pr.name, pr.shape),
            });
        };
        let w = MatRef::new(pr.value.as_slice(), r, c, c);
        let packed = kernels.pack_b(if in_out { w } else { w.t() })?;
        pr.packed = Some((in_out, packed));
        Ok(true)
    }

    /// The packed value [`Graph::pack_param`] made for `v`, if any.
    pub(crate) fn packed_param(&self, v: Var) -> Option<&crate::kernels::gemm::PackedB> {
        match self.nodes.get(v.idx as usize)?.value {
            Value::Param(p) => self.params[p].packed.as_ref().map(|(_, b)| b),
            Value::Owned(_) => None,
        }
    }

    /// Value and shape of `v`, validated for `op`.
    pub(crate) fn arg(&self, op: &'static str, v: Var) -> Result<(&[f32], &[usize])> {
        let n = self.node(op, v)?;
        let x = match &n.value {
            Value::Owned(x) => x.as_slice(),
            Value::Param(p) => self.params[*p].value.as_slice(),
        };
        Ok((x, &n.shape))
    }

    /// Returns the buffer of `v` to the pool now, for inference: with no op recorded on the tape
    /// (no-grad mode, or nothing trainable) a value is dead once its consumers have run, and
    /// releasing it keeps a long no-grad forward from holding every activation until
    /// [`Graph::clear`]. Later use of `v` is an error. Releasing a parameter's node frees nothing.
    ///
    /// # Errors
    /// [`Error::Shape`] when `v` is stale or already released, or when the tape holds recorded
    /// ops (their backward may read any value).
    pub fn release(&mut self, v: Var) -> Result<()> {
        self.node("release", v)?;
        if self.recorded > 0 {
            return Err(Error::Shape {
                op: "release",
                detail: format!("{} recorded ops may still read {v:?}", self.recorded),
            });
        }
        let n = &mut self.nodes[v.idx as usize];
        n.released = true;
        if let Value::Owned(buf) = std::mem::replace(&mut n.value, Value::Owned(Vec::new())) {
            self.pool.give(buf);
        }
        Ok(())
    }

    /// Appends an op's result. When no input needs a gradient (or recording is off) the op is
    /// dropped and the value stored as a constant leaf.
    pub(crate) fn push(&mut self, value: Vec<f32>, shape: Vec<usize>, op: Op) -> Var {
        let needs_grad = self.grad_enabled
            && op
                .inputs()
                .iter()
                .any(|v| self.nodes[v.idx as usize].needs_grad);
        let op = if needs_grad { op } else { Op::Leaf };
        let node = Node {
            shape,
            value: Value::Owned(value),
            needs_grad,
            released: false,
        };
        self.push_node(node, op)
    }

    /// Whether an op on `inputs` will be recorded (so it should save what backward needs).
    pub(crate) fn records(&self, inputs: &[Var]) -> bool {
        self.grad_enabled
            && inputs
                .iter()
                .any(|v| self.nodes.get(v.idx as usize).is_some_and(|n| n.needs_grad))
    }

    fn push_node(&mut self, node: Node, op: Op) -> Var {
        self.recorded += usize::from(!matches!(op, Op::Leaf));
        self.nodes.push(node);
        self.ops.push(op);
        Var {
            idx: (self.nodes.len() - 1) as u32,
            generation: self.generation,
        }
    }

    pub(crate) fn pool(&mut self) -> &mut Pool {
        &mut self.pool
    }

    // ---- backward -----------------------------------------------------------------------

    /// Back-propagates from the scalar `loss`: ADDS into parameter gradients and returns the
    /// gradients of trainable inputs; then clears the tape.
    ///
    /// # Errors
    /// [`Error::Shape`] when `loss` is stale or not a single element; kernel errors from a
    /// backward op (the tape is cleared in every case).
    pub fn backward(&mut self, loss: Var) -> Result<Gradients> {
        let r = self.backward_inner(loss);
        self.clear();
        r
    }

    fn backward_inner(&mut self, loss: Var) -> Result<Gradients> {
        let n = self.node("backward", loss)?;
        if n.shape.iter().product::<usize>() != 1 {
            return Err(Error::Shape {
                op: "backward",
                detail: format!("loss must be one element, got shape {:?}", n.shape),
            });
        }
        let mut out = Gradients::default();
        if !n.needs_grad {
            return Ok(out);
        }
        let mut node_grads: Vec<Option<Vec<f32>>> = Vec::new();
        node_grads.resize_with(self.nodes.len(), || None);
        let mut seed = self.pool.take(1);
        seed[0] = 1.0;
        node_grads[loss.idx as usize] = Some(seed);
        let vals = Vals {
            nodes: &self.nodes,
            params: &self.params,
        };
        let kernels = self.kernels;
        for i in (0..=loss.idx as usize).rev() {
            let Some(dy) = node_grads[i].take() else {
                continue;
            };
            let o = &self.ops[i];
            if matches!(o, Op::Leaf) {
                if matches!(self.nodes[i].value, Value::Owned(_)) {
                    let generation = self.generation;
                    out.grads.push((
                        Var {
                            idx: i as u32,
                            generation,
                        },
                        dy,
                    ));
                }
                continue;
            }
            let mut grads = Grads {
                nodes: &self.nodes,
                node: &mut node_grads,
                params: &mut self.param_grads,
                param_zero: &mut self.grad_zero,
                pool: &mut self.pool,
            };
            let out_var = Var {
                idx: i as u32,
                generation: self.generation,
            };
            op::backward(o, kernels, &vals, &mut grads, out_var, &dy)?;
            self.pool.give(dy);
        }
        Ok(out)
    }

    /// Returns the buffers of input gradients to the pool once they have been read.
    pub fn recycle(&mut self, grads: Gradients) {
        grads.grads.into_iter().for_each(|(_, g)| self.pool.give(g));
    }

    /// Drops the tape, returning every node buffer and saved activation to the pool; handles
    /// from it become stale.
    pub fn clear(&mut self) {
        for n in self.nodes.drain(..) {
            if let Value::Owned(v) = n.value {
                self.pool.give(v);
            }
        }
        for o in self.ops.drain(..) {
            o.recycle(&mut self.pool);
        }
        self.recorded = 0;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// The `Error::Shape` for `op` with `detail`.
pub(crate) fn shape_err(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}
