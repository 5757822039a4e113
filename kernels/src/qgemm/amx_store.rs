//! The AMX kernel's output side: 32 x 32 blocks of i32 dequantized into C, a few rows at a time
//! ([`Epilogue::drain`]), with non-temporal whole-line stores for large f32 outputs
//! ([`store_streamed`]).
#![cfg(target_arch = "x86_64")]

use super::amx::Tile;
use super::{Ctx, NB, Out};
use std::ops::Range;

/// A block of C stored in a tile buffer, not yet (fully) written to C: rows `done..rows` left.
pub(super) struct Pending {
    pub(super) buf: usize,
    pub(super) i0: usize,
    pub(super) rows: usize,
    pub(super) j0: usize,
    /// `Some((first, last))` when streamed ([`store_streamed`]), `None` for ordinary stores.
    pub(super) flags: Option<(bool, bool)>,
    pub(super) done: usize,
}

/// Where finished blocks go: C, streamed or not, with the streamed rows' carry.
pub(super) struct Epilogue<'a, 'c> {
    pub(super) ctx: &'a Ctx<'c>,
    pub(super) stream: Option<Stream>,
    pub(super) carry: Carry,
}

impl Epilogue<'_, '_> {
    /// Writes rows `p.done..upto` (clipped to `p.rows`) of `p` from `tile`.
    ///
    /// # Safety
    /// `tile` holds block `p` (rows `p.i0..p.i0 + p.rows` below m, columns `p.j0..` inside n);
    /// earlier blocks of the same streamed run were drained first.
    #[inline(always)]
    pub(super) unsafe fn drain(&mut self, tile: &Tile, p: &mut Pending, upto: usize) {
        let upto = upto.min(p.rows);
        if p.done >= upto {
            return;
        }
        let r = p.done..upto;
        p.done = upto;
        // SAFETY: caller's contract.
        unsafe {
            match (self.stream, p.flags) {
                (Some(st), Some(flags)) => {
                    store_streamed(self.ctx, st, tile, (p.i0, r, p.j0), flags, &mut self.carry)
                }
                _ => super::vnni::store512(
                    self.ctx,
                    &tile.0[r.start * NB..],
                    p.i0 + r.start,
                    r.len(),
                    p.j0,
                    false,
                ),
            }
        }
    }
}

/// Dequantized outputs of at least this many bytes go to C with non-temporal stores: C is then
/// larger than what the L2 keeps beside the weights it streams, and ordinary stores would first
/// read every line of C (measured on 256 x 768 x 3072, 3 MiB of C: the f32 stores cost about 40%
/// of the call with ordinary stores, and NT stores took 15-25% off the call).
const STREAM_MIN_BYTES: usize = 1 << 20;

/// Streaming is on for this problem: the per-row activation scales and C's base pointer.
#[derive(Clone, Copy)]
pub(super) struct Stream {
    c: *mut f32,
}

impl Stream {
    pub(super) fn new(ctx: &Ctx) -> Option<Self> {
        match ctx.out {
            Out::F32(c) if ctx.m * ctx.w.n() * 4 >= STREAM_MIN_BYTES => Some(Self { c }),
            _ => None,
        }
    }
}

/// Whether column block `jb` is whole (32 columns inside n), which streaming requires.
pub(super) fn stream_full(ctx: &Ctx, jb: usize) -> bool {
    (jb + 1) * NB <= ctx.w.n()
}

/// Per row of a 32-row block, the last 16 values of the previous column block of the same run,
/// not yet written: with C rows not on a 64-byte boundary, the cache line that straddles two
/// blocks is streamed whole once both halves are known.
#[repr(C, align(64))]
pub(super) struct Carry(pub(super) [[f32; 16]; 32]);

/// Dequantizes `tile` (rows, NB) i32 into rows `i0..i0 + rows`, columns `j0..j0 + 32` of C with
/// non-temporal stores of whole cache lines. A row starting `o` floats past a line boundary
/// (o > 0) spans three lines; the middle one is streamed, the first is completed from the
/// previous block's `carry` and streamed unless this block starts its run (`first`: ordinary
/// masked store of its part), and the last is kept in `carry` for the next block unless this
/// block ends its run (`last`: ordinary masked store). Lines shared with another run are thus
/// only ever written by ordinary stores. Same arithmetic as `store512`.
///
/// # Safety
/// As `store512`, the CPU has AVX-512 F, `j0 + 32 <= n`, C is `st.c`, and `carry` holds the
/// previous block of this run for these rows unless `first`.
#[target_feature(enable = "avx512f")]
unsafe fn store_streamed(
    ctx: &Ctx,
    st: Stream,
    tile: &Tile,
    (i0, rows, j0): (usize, Range<usize>, usize),
    (first, last): (bool, bool),
    carry: &mut Carry,
) {
    use std::arch::x86_64::*;
    let n = ctx.w.n();
    let sa = &ctx.a.scales[i0..];
    let sw = &ctx.w.scales[j0..j0 + NB];
    // Every store below lies in row i of C, columns j0 - 15..j0 + 48, clipped to the row's own
    // run by the masks and line arithmetic (caller's contract).
    // SAFETY: `sw` holds 32 values; each store stays in its row's run of C, as said above.
    unsafe {
        let (w0, w1) = (
            _mm512_loadu_ps(sw.as_ptr()),
            _mm512_loadu_ps(sw.as_ptr().add(16)),
        );
        for r in rows {
            let a = _mm512_set1_ps(sa[r]);
            let t = tile.0.as_ptr().add(r * NB);
            let d0 = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_load_si512(t.cast())),
                _mm512_mul_ps(a, w0),
            );
            let d1 = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_load_si512(t.add(16).cast())),
                _mm512_mul_ps(a, w1),
            );
            let dst = st.c.add((i0 + r) * n + j0);
            let o = (dst as usize % 64) / 4;
            if o == 0 {
                _mm512_stream_ps(dst, d0);
                _mm512_stream_ps(dst.add(16), d1);
                continue;
            }
            // Lanes l of a line starting at dst - o + 16q: concatenation (lo, hi) at l + 16 - o.
            let idx = _mm512_add_epi32(
                _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                _mm512_set1_epi32(16 - o as i32),
            );
            let line = dst.sub(o);
            // Partial lines take masked stores at the line's own (aligned) address, so that no
            // store touches a line that is being streamed.
            let low: __mmask16 = (1u16 << o) - 1;
            if first {
                _mm512_mask_store_ps(line, !low, _mm512_permutex2var_ps(d0, idx, d0));
            } else {
                let prev = _mm512_load_ps(carry.0[r].as_ptr());
                _mm512_stream_ps(line, _mm512_permutex2var_ps(prev, idx, d0));
            }
            _mm512_stream_ps(line.add(16), _mm512_permutex2var_ps(d0, idx, d1));
            if last {
                _mm512_mask_store_ps(line.add(32), low, _mm512_permutex2var_ps(d1, idx, d1));
            } else {
                _mm512_store_ps(carry.0[r].as_mut_ptr(), d1);
            }
        }
    }
}
