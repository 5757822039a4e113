//! AMX-INT8 kernel: `tdpbssd` on 2 x 2 tiles of 16 x 16 i32 (32 rows x 32 columns of C), k in
//! steps of 64 bytes. AMX has no intrinsics on stable Rust, so each instruction is one `asm!`.
//!
//! Tiles: tmm0..3 accumulate C (rows 0-15 / 16-31 x columns 0-15 / 16-31), tmm4/5 hold 16 rows of
//! A x 64 bytes of k, tmm6/7 hold 16 k-groups x 64 bytes of a weight panel, which is exactly the
//! packed layout (see `pack.rs`). `tdpbssd` multiplies signed by signed bytes, so activations are
//! plain i8 and need no correction; the activation buffer is padded to a multiple of 32 rows and
//! laid out as contiguous 1 KB tiles, quantized straight into it ([`quantize_tiles`]; the exact-i32
//! entry re-lays given bytes with [`to_tiles`]). Each finished 32 x 32 block is stored to one of
//! two tile buffers and written to C a few rows per k-step of the next block, so the vector
//! dequantization and the stores run while the tile unit multiplies instead of between blocks;
//! large f32 outputs leave through non-temporal stores (the output side is `amx_store.rs`).
#![cfg(target_arch = "x86_64")]

use super::amx_store::{Carry, Epilogue, Pending, Stream, stream_full};
use super::pack::Aligned;
use super::quant::{Leaves, row_scales};
use super::{Acts, Ctx, NB, bytemuck_i8};
use std::arch::asm;
use std::ops::Range;
use std::sync::OnceLock;

/// Whether this process may use AMX tile data: asked of the kernel once, with
/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (Linux 5.16+). Without it the first tile
/// instruction would fault; on refusal the VNNI paths are used instead.
pub(crate) fn permitted() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| crate::Features::detect().amx_int8 && request_tile_permission())
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: u64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let mut ret = SYS_ARCH_PRCTL;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) reads and writes no user memory; it only extends this process's XSAVE permissions. `syscall` clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// Bytes of packed weights per chunk of column blocks, kept in L2 (2 MB per core here) while
/// every row block of A passes over it.
const B_CHUNK_BYTES: usize = 768 * 1024;

/// The 64-byte tile configuration (palette 1): 8 tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_16x64() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = 16; // rows
        }
        Self(c)
    }
}

/// C tile buffer: 32 rows x NB i32, 64-byte aligned for `tilestored`.
#[repr(C, align(64))]
pub(super) struct Tile(pub(super) [i32; 32 * NB]);

/// Column blocks `blocks` of C, per-channel format, i8 activations padded to 32-row multiples.
///
/// # Safety
/// AMX-INT8 is present and [`permitted`] returned true; the CPU has AVX-512 (epilogue); `ctx` is
/// a valid problem whose activation buffer holds `m.next_multiple_of(32)` rows laid out by
/// [`to_tiles`].
pub(crate) unsafe fn run(ctx: &Ctx, blocks: Range<usize>) {
    let cfg = TileConfig::all_16x64();
    // SAFETY: the CPU has AMX and this process has tile permission (contract); `cfg` is valid.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
    let (kp, m) = (ctx.w.kp(), ctx.m);
    let steps = kp / 64;
    let mut tiles = [Tile([0; 32 * NB]), Tile([0; 32 * NB])];
    // The 32 x 32 blocks of C this call owns.
    // A last row block of at most 16 rows runs afterwards on half the tiles ([`half_block`]),
    // instead of multiplying 16 rows of padding.
    let full_rows = if m % 32 > 0 && m % 32 <= 16 {
        m - m % 32
    } else {
        m
    };
    // Column blocks go in chunks whose weights (`ncb` blocks of kp * 32 bytes) stay in L2; each
    // row block of A sweeps a whole chunk, so C is written in runs of up to ncb * 128 bytes per
    // row. Column-block-major order (32 rows x 128 bytes per block, all of C touched per block
    // column) made the f32 stores of C cost more than the tile loop (measured ~1.8x slower).
    let ncb = (B_CHUNK_BYTES / (NB * kp.max(64))).clamp(1, 32);
    let end = blocks.end;
    // Jobs (jb, i0, run): C block (i0, jb) of the run `run.0..run.1` of column blocks that row
    // block i0 sweeps in one chunk.
    let mut jobs = blocks
        .clone()
        .step_by(ncb)
        .flat_map(|jc| {
            let run = (jc, (jc + ncb).min(end));
            (0..full_rows)
                .step_by(32)
                .flat_map(move |i0| (run.0..run.1).map(move |jb| (jb, i0, run)))
        })
        .peekable();
    let mut out = Epilogue {
        ctx,
        stream: Stream::new(ctx),
        carry: Carry([[0.0; 16]; 32]),
    };
    let ptrs = |(jb, i0): (usize, usize)| {
        // SAFETY: row block i0 < m lies in the 32-row-padded activation buffer, and panel pair 2jb, 2jb+1 in the packed weights (n padded to 32).
        unsafe {
            let a = ctx.a.data.as_ptr().add(i0 * kp);
            let b = ctx.w.panels.as_ptr().add(2 * jb * kp * 16);
            Operands {
                a,
                a1: a.add(16 * kp),
                b,
                b1: b.add(kp * 16),
            }
        }
    };
    // SAFETY: (all blocks below) tiles configured above; `Operands` cover `steps` k-steps of 1 KB tiles (contract and layout); `tiles` hold 32 x NB i32 each.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
    if let (Some(first), true) = (jobs.peek(), steps > 0) {
        // SAFETY: see above.
        unsafe { load_step(&ptrs((first.0, first.1)), 0) };
    }
    // The previous block's output, dequantized and written a few rows per k-step of the current
    // block while the tile unit multiplies (double-buffered in `tiles`).
    let mut pending: Option<Pending> = None;
    let per_step = if steps > 1 {
        32usize.div_ceil(steps - 1)
    } else {
        32
    };
    let mut buf = 0;
    while let Some((jb, i0, run)) = jobs.next() {
        let ops = ptrs((jb, i0));
        if steps > 0 {
            // SAFETY: see above.
            unsafe {
                for s in 1..steps {
                    pipelined_step(&ops, s);
                    if let Some(p) = pending.as_mut() {
                        let upto = p.done + per_step;
                        out.drain(&tiles[p.buf], p, upto);
                    }
                }
            }
        }
        if let Some(p) = pending.as_mut() {
            // SAFETY: see above.
            unsafe { out.drain(&tiles[p.buf], p, 32) };
        }
        if steps > 0 {
            // SAFETY: see above.
            unsafe {
                last_products();
            }
            if let Some(next) = jobs.peek() {
                // The next block's first operands load while C drains below.
                // SAFETY: see above.
                unsafe { load_step(&ptrs((next.0, next.1)), 0) };
            }
        }
        // SAFETY: see above.
        unsafe { store_and_zero(&mut tiles[buf]) };
        let streamed = out.stream.is_some() && stream_full(ctx, jb);
        pending = Some(Pending {
            buf,
            i0,
            rows: (m - i0).min(32),
            j0: jb * NB,
            flags: streamed.then(|| (jb == run.0, jb + 1 == run.1 || !stream_full(ctx, jb + 1))),
            done: 0,
        });
        buf ^= 1;
    }
    if let Some(p) = pending.as_mut() {
        // SAFETY: see above.
        unsafe { out.drain(&tiles[p.buf], p, 32) };
    }
    if out.stream.is_some() {
        // Non-temporal stores are weakly ordered: drain them before the caller can read C.
        // SAFETY: `sfence` only orders this thread's stores.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let tile = &mut tiles[0];
    if full_rows < m {
        for jb in blocks {
            let ops = ptrs((jb, full_rows));
            // SAFETY: as above; rows full_rows.. (at most 16) of C below m, block jb inside n.
            unsafe {
                half_block(&ops, steps, tile);
                super::vnni::store512(ctx, &tile.0, full_rows, m - full_rows, jb * NB, false);
            }
        }
    }
    // SAFETY: releases the tile state this thread configured above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// One 32 x 32 block's operands: two row tiles of A and a panel pair of W, each `kp * 16`
/// contiguous bytes in 1 KB k-steps.
struct Operands {
    a: *const u8,
    a1: *const u8,
    b: *const i8,
    b1: *const i8,
}

/// Loads k-step `s` of all four operand tiles (tmm4 A0, tmm5 A1, tmm6 B0, tmm7 B1).
///
/// # Safety
/// Tiles configured; step `s` lies inside each operand.
#[inline(always)]
unsafe fn load_step(o: &Operands, s: usize) {
    // SAFETY: caller's contract.
    unsafe {
        asm!(
            "tileloadd tmm4, [{a0} + {ld}*1]",
            "tileloadd tmm6, [{b0} + {ld}*1]",
            "tileloadd tmm7, [{b1} + {ld}*1]",
            "tileloadd tmm5, [{a1} + {ld}*1]",
            a0 = in(reg) o.a.add(s * 1024),
            a1 = in(reg) o.a1.add(s * 1024),
            b0 = in(reg) o.b.add(s * 1024),
            b1 = in(reg) o.b1.add(s * 1024),
            ld = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
}

/// The products of step `s - 1` with the loads of step `s` slotted in as soon as their register
/// frees up: tile registers are not renamed, so a load waits for the last product reading its
/// register, and a product for its loads. A0 reloads after C01, B0 after C10, A1 and B1 after
/// C11, so every load has one or two 16-cycle products to land behind.
///
/// # Safety
/// Tiles configured and step `s - 1` loaded; step `s` lies inside each operand.
#[inline(always)]
unsafe fn pipelined_step(o: &Operands, s: usize) {
    // No software prefetch of B: the tiles stream from L2 at the products' rate, and 32
    // prefetches per step measured ~3% slower over the call.
    // SAFETY: caller's contract.
    unsafe {
        asm!(
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm4, tmm7",
            "tileloadd tmm4, [{a0} + {ld}*1]",
            "tdpbssd tmm2, tmm5, tmm6",
            "tileloadd tmm6, [{b0} + {ld}*1]",
            "tdpbssd tmm3, tmm5, tmm7",
            "tileloadd tmm5, [{a1} + {ld}*1]",
            "tileloadd tmm7, [{b1} + {ld}*1]",
            a0 = in(reg) o.a.add(s * 1024),
            a1 = in(reg) o.a1.add(s * 1024),
            b0 = in(reg) o.b.add(s * 1024),
            b1 = in(reg) o.b1.add(s * 1024),
            ld = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
}

/// The products of the last loaded step.
///
/// # Safety
/// Tiles configured and loaded.
#[inline(always)]
unsafe fn last_products() {
    // SAFETY: caller's contract; register-only instructions.
    unsafe {
        asm!(
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm4, tmm7",
            "tdpbssd tmm2, tmm5, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            options(nostack, nomem),
        );
    }
}

/// One 16 x 32 block (`o.a` only; `o.a1` unused): C in tmm0/1, and the operands double-buffered
/// in (tmm4, tmm6, tmm7) and (tmm5, tmm2, tmm3) on even and odd k-steps, so that the next step
/// loads while this one multiplies. Stores rows 0..16 of `tile` and leaves C zeroed.
///
/// # Safety
/// Tiles configured; `o.a`, `o.b`, `o.b1` cover `steps` k-steps.
unsafe fn half_block(o: &Operands, steps: usize, tile: &mut Tile) {
    // SAFETY: caller's contract; every load reads one 1 KB k-step < steps.
    unsafe {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        if steps > 0 {
            asm!(
                "tileloadd tmm4, [{a} + {ld}*1]",
                "tileloadd tmm6, [{b0} + {ld}*1]",
                "tileloadd tmm7, [{b1} + {ld}*1]",
                a = in(reg) o.a, b0 = in(reg) o.b, b1 = in(reg) o.b1, ld = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        for s in 0..steps {
            let next = s + 1 < steps;
            let (a, b0, b1) = (
                o.a.wrapping_add((s + 1) * 1024),
                o.b.wrapping_add((s + 1) * 1024),
                o.b1.wrapping_add((s + 1) * 1024),
            );
            if s % 2 == 0 {
                if next {
                    asm!(
                        "tileloadd tmm5, [{a} + {ld}*1]",
                        "tileloadd tmm2, [{b0} + {ld}*1]",
                        "tileloadd tmm3, [{b1} + {ld}*1]",
                        a = in(reg) a, b0 = in(reg) b0, b1 = in(reg) b1, ld = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm1, tmm4, tmm7",
                    options(nostack, nomem)
                );
            } else {
                if next {
                    asm!(
                        "tileloadd tmm4, [{a} + {ld}*1]",
                        "tileloadd tmm6, [{b0} + {ld}*1]",
                        "tileloadd tmm7, [{b1} + {ld}*1]",
                        a = in(reg) a, b0 = in(reg) b0, b1 = in(reg) b1, ld = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tdpbssd tmm0, tmm5, tmm2",
                    "tdpbssd tmm1, tmm5, tmm3",
                    options(nostack, nomem)
                );
            }
        }
        let c = tile.0.as_mut_ptr().cast::<u8>();
        asm!(
            "tilestored [{c0} + {ld}*1], tmm0",
            "tilestored [{c1} + {ld}*1], tmm1",
            "tilezero tmm0",
            "tilezero tmm1",
            c0 = in(reg) c,
            c1 = in(reg) c.add(64),
            ld = in(reg) NB * 4,
            options(nostack),
        );
    }
}

/// Stores C (tmm0..3) as `tile` (32, NB) i32 and zeroes it for the next block.
///
/// # Safety
/// Tiles configured.
#[inline(always)]
unsafe fn store_and_zero(tile: &mut Tile) {
    let c = tile.0.as_mut_ptr().cast::<u8>();
    // SAFETY: each store writes 16 rows x 64 bytes inside the 32 x 128-byte tile.
    unsafe {
        asm!(
            "tilestored [{c0} + {ld}*1], tmm0",
            "tilestored [{c1} + {ld}*1], tmm1",
            "tilestored [{c2} + {ld}*1], tmm2",
            "tilestored [{c3} + {ld}*1], tmm3",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(64),
            c2 = in(reg) c.add(16 * NB * 4),
            c3 = in(reg) c.add(16 * NB * 4 + 64),
            ld = in(reg) NB * 4,
            options(nostack),
        );
    }
}

/// Quantizes x: (m, k) f32 per row straight into the AMX tile layout of [`to_tiles`] (rows padded
/// to a multiple of 32, k to `kp`, padding zero), in `buf` (resized; every byte is written).
/// Bytes and scales are those of the row-major path: the same amax, and quantizing 64 values at
/// a time is elementwise the same.
pub(crate) fn quantize_tiles(
    leaves: Leaves,
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    buf: Aligned<u8>,
) -> Acts {
    use rayon::prelude::*;
    let rows = m.next_multiple_of(32);
    let mut data = buf.resized(rows * kp);
    let mut scales = vec![0.0f32; rows];
    // Row tile t: rows 16t..16t + 16, `kp * 16` bytes, k-step s at s * 1024, row r at r * 64.
    let tile = |(t, (d, sc)): (usize, (&mut [u8], &mut [f32]))| {
        let q: &mut [i8] = bytemuck_i8(d);
        for (r, s) in sc.iter_mut().enumerate() {
            let i = 16 * t + r;
            if i >= m {
                for step in 0..kp / 64 {
                    q[step * 1024 + r * 64..][..64].fill(0);
                }
                continue;
            }
            let xr = &x[i * k..(i + 1) * k];
            let (scale, inv) = row_scales(leaves.amax(xr));
            *s = scale;
            for step in 0..kp / 64 {
                let seg = &mut q[step * 1024 + r * 64..][..64];
                let xs = &xr[(step * 64).min(k)..((step + 1) * 64).min(k)];
                leaves.quant(xs, inv, seg);
                seg[xs.len()..].fill(0);
            }
        }
    };
    if kp > 0 {
        let it = data
            .chunks_mut(16 * kp)
            .zip(scales.chunks_mut(16))
            .enumerate();
        if m * k >= super::PAR_MIN_MACS / 16 {
            it.collect::<Vec<_>>().into_par_iter().for_each(tile);
        } else {
            it.for_each(tile);
        }
    }
    Acts { data, scales }
}

/// Re-lays row-major activations (rows, kp), rows a multiple of 16, as AMX A tiles: row tile
/// `t` (rows 16t..16t+16) is `kp * 16` contiguous bytes, k-step `s` of it the 1 KB tile
/// `[r % 16][k % 64]`, so every `tileloadd` reads one contiguous kilobyte.
pub(crate) fn to_tiles(data: &[u8], rows: usize, kp: usize) -> Aligned<u8> {
    let mut out = Aligned::zeroed(rows * kp);
    for r in 0..rows {
        for s in 0..kp / 64 {
            let dst = ((r / 16) * (kp / 64) + s) * 1024 + (r % 16) * 64;
            out[dst..dst + 64].copy_from_slice(&data[r * kp + s * 64..][..64]);
        }
    }
    out
}
