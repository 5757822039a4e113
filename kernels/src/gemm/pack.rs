//! Packing of A and B blocks into the micro-panel layouts the micro-kernels read.

/// The largest MR of any micro-kernel.
pub(crate) const MAX_MR: usize = 16;

/// Packs the `mc x kc` block of A at `a` (strides `rs`, `cs`) into `mc.div_ceil(mr)` micro-panels
/// of `kc x MR` values each (`dst[panel][p * mr + i]`), zero-padding rows past `mc`.
///
/// # Safety
/// Every `a[i * rs + p * cs]` for `i < mc`, `p < kc` is readable, and `dst` holds at least
/// `mc.div_ceil(mr) * mr * kc` values.
pub(crate) unsafe fn pack_a(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    dst: &mut [f32],
) {
    for (panel, out) in dst
        .chunks_exact_mut(mr * kc)
        .take(mc.div_ceil(mr))
        .enumerate()
    {
        let i0 = panel * mr;
        let rows = mr.min(mc - i0);
        #[cfg(target_arch = "x86_64")]
        if cs == 1 && rows == 8 && mr == 8 && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present (checked above); rows i0..i0 + 8 each hold kc elements (caller's contract) and `out` holds kc * 8 values.
            unsafe { transpose8_avx(a.add(i0 * rs), rs, kc, out, 8) };
            continue;
        }
        if rs == 1 && rows == mr && (mr == 8 || mr == 6) {
            // A is a transposed row-major matrix (`dW = dY^T X`): each k step of a full panel is
            // MR adjacent values, copied as a fixed-size block rather than a `memcpy` call per k
            // step (packing took 14-17% of the single-threaded `dW` GEMMs' time, 5-9% of the
            // others').
            // SAFETY: as below, with rows == mr: column p < kc holds rows i0..i0 + mr.
            unsafe {
                match mr {
                    8 => copy_rows::<8>(kc, a.add(i0), cs, out),
                    _ => copy_rows::<6>(kc, a.add(i0), cs, out),
                }
            }
            continue;
        } else if rs == 1 {
            // A is a transposed row-major matrix (`dW = dY^T X`): each k step of the panel is
            // `rows` adjacent values.
            for (p, dst) in out.chunks_exact_mut(mr).enumerate() {
                // SAFETY: column p < kc holds rows i0..i0 + rows < mc (caller's contract).
                let src = unsafe { std::slice::from_raw_parts(a.add(i0 + p * cs), rows) };
                dst[..rows].copy_from_slice(src);
            }
        } else if cs == 1 {
            // Rows of A are contiguous: read the panel's rows side by side (as many sequential
            // streams) and write the panel in order, one k step of `mr` values at a time.
            let mut src: [&[f32]; MAX_MR] = [&[]; MAX_MR];
            for (i, s) in src.iter_mut().enumerate().take(rows) {
                // SAFETY: row i0 + i < mc holds kc elements (caller's contract).
                *s = unsafe { std::slice::from_raw_parts(a.add((i0 + i) * rs), kc) };
            }
            for (p, dst) in out.chunks_exact_mut(mr).enumerate() {
                for (d, row) in dst.iter_mut().zip(&src[..rows]) {
                    *d = row[p];
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    // SAFETY: i0 + i < mc and p < kc (caller's contract).
                    out[p * mr + i] = unsafe { *a.add((i0 + i) * rs + p * cs) };
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                out[p * mr + rows..(p + 1) * mr].fill(0.0);
            }
        }
    }
}

/// Eight rows of `kc` values (`src + i * rs`, `i < 8`) written column by column:
/// `dst[q * ds + i] = src[i * rs + q]`. 8 x 8 tiles are transposed in registers (the classic
/// unpack / shuffle / lane-permute sequence), then the `kc % 8` tail column by column. Packs a full
/// 8-row panel of row-major A (`ds = 8`) and 8 columns of a transposed B (`ds = NR`), and
/// transposes an attention head's keys (`ds = T`).
///
/// The callers walk down the rows 8 at a time, so it prefetches the 8 rows that the call after
/// next reads (rows 16..24): the rows are short streams (a k block, or a head) that the hardware
/// prefetchers barely learn. Measured on 2 threads, 16 expert GEMMs of m x 384 x 1536 against
/// transposed weights, alternated in one process without the prefetch: 1.035x (m 256) and
/// 1.085x (m 64); one group ahead instead of two gave 0.5-0.8% less.
///
/// # Safety
/// The CPU has AVX; rows `src + i * rs` for `i < 8` each hold `kc` readable values; `dst` holds
/// `(kc - 1) * ds + 8` values when `kc > 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn transpose8_avx(
    a: *const f32,
    rs: usize,
    kc: usize,
    out: &mut [f32],
    ds: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(kc == 0 || out.len() >= (kc - 1) * ds + 8);
    let o = out.as_mut_ptr();
    // Prefetches never fault: past the last row they are only wasted.
    let ahead = a.wrapping_add(16 * rs);
    let mut p = 0;
    while p + 8 <= kc {
        if p % 16 == 0 {
            for i in 0..8 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(i * rs + p).cast());
            }
        }
        // SAFETY: columns p..p + 8 of each of the 8 rows are readable, and out[(p + j) * ds..][..8] for j < 8 is writable (p + 8 <= kc; the function's contract).
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(a.add(i * rs + p));
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let w = |j: usize, v| _mm256_storeu_ps(o.add((p + j) * ds), v);
            w(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
            w(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
            w(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
            w(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
            w(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
            w(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
            w(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
            w(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
        p += 8;
    }
    for q in p..kc {
        for i in 0..8 {
            // SAFETY: q < kc and i < 8 (the function's contract).
            out[q * ds + i] = unsafe { *a.add(i * rs + q) };
        }
    }
}

/// Packs the `kc x nc` block of B at `b` (strides `rs`, `cs`) into `nc.div_ceil(nr)` micro-panels
/// of `kc x NR` values each (`dst[panel][p * nr + j]`), zero-padding columns past `nc`.
///
/// # Safety
/// Every `b[p * rs + j * cs]` for `p < kc`, `j < nc` is readable, and `dst` holds at least
/// `nc.div_ceil(nr) * nr * kc` values.
pub(crate) unsafe fn pack_b(
    nr: usize,
    kc: usize,
    nc: usize,
    b: *const f32,
    rs: usize,
    cs: usize,
    dst: &mut [f32],
) {
    for (panel, out) in dst
        .chunks_exact_mut(nr * kc)
        .take(nc.div_ceil(nr))
        .enumerate()
    {
        let j0 = panel * nr;
        let cols = nr.min(nc - j0);
        if cs == 1 && cols == nr && nr == 48 {
            // SAFETY: as below, with cols == nr == 48.
            unsafe { copy_rows::<48>(kc, b.add(j0), rs, out) };
        } else if cs == 1 && cols == nr && nr == 16 {
            // SAFETY: as below, with cols == nr == 16.
            unsafe { copy_rows::<16>(kc, b.add(j0), rs, out) };
        } else if cs == 1 {
            for p in 0..kc {
                // SAFETY: row p < kc holds columns j0..j0 + cols < nc (caller's contract).
                let src = unsafe { std::slice::from_raw_parts(b.add(p * rs + j0), cols) };
                out[p * nr..p * nr + cols].copy_from_slice(src);
                out[p * nr + cols..(p + 1) * nr].fill(0.0);
            }
        } else if rs == 1 {
            // Columns of B are contiguous (B is a transposed row-major matrix, a Linear weight):
            // transpose 8 columns at a time.
            let mut j = 0;
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx") {
                while j + 8 <= cols {
                    // SAFETY: AVX is present; columns j0 + j..j0 + j + 8 < nc each hold kc values (caller's contract) and out[j..] holds (kc - 1) * nr + 8 values since j + 8 <= nr.
                    unsafe { transpose8_avx(b.add((j0 + j) * cs), cs, kc, &mut out[j..], nr) };
                    j += 8;
                }
            }
            for jj in j..cols {
                for p in 0..kc {
                    // SAFETY: column j0 + jj < nc and row p < kc (caller's contract).
                    out[p * nr + jj] = unsafe { *b.add(p + (j0 + jj) * cs) };
                }
            }
            if cols < nr {
                for p in 0..kc {
                    out[p * nr + cols..(p + 1) * nr].fill(0.0);
                }
            }
        } else {
            // Neither stride is 1: read each column once, in blocks of 16 k so the writes stay
            // within a few cache lines.
            for p0 in (0..kc).step_by(16) {
                let pn = 16.min(kc - p0);
                for j in 0..cols {
                    for p in p0..p0 + pn {
                        // SAFETY: column j0 + j < nc and row p < kc (caller's contract).
                        out[p * nr + j] = unsafe { *b.add(p * rs + (j0 + j) * cs) };
                    }
                }
                for p in p0..p0 + pn {
                    out[p * nr + cols..(p + 1) * nr].fill(0.0);
                }
            }
        }
    }
}

/// How many rows ahead [`copy_rows`] prefetches. Rows `rs` apart are a strided stream that the
/// hardware prefetchers follow poorly (past 4 KiB apart each row is a new page, where they stop),
/// so a block of B fresh from memory was copied at about one miss per row. Measured in one process, calls alternated, each on one of 40 cold
/// B matrices: `dX = dY W` at 256 rows (a mixture expert's share of tokens; k x n = 1536 x 384
/// and 384 x 1536) 1.056-1.058x on 2 threads (q1-q3 1.032-1.073), 1.031-1.033x on 1; at 1024
/// rows 1.007-1.017x; 4 rows ahead gave 1.039-1.044x, 16 gave 1.048-1.050x. The tiny MoE's
/// training step, alternated step by step: 1.010x (q1-q3 0.977-1.059).
const PREFETCH_ROWS: usize = 8;

/// `kc` rows of `N` values, `rs` apart at `src`, copied one after another into `out`, prefetching
/// [`PREFETCH_ROWS`] rows ahead. The length is a constant so each row is a fixed-size copy.
///
/// # Safety
/// Rows `src + p * rs` for `p < kc` each hold `N` readable values; `out` holds `kc * N` values.
unsafe fn copy_rows<const N: usize>(kc: usize, src: *const f32, rs: usize, out: &mut [f32]) {
    for (p, dst) in out.chunks_exact_mut(N).take(kc).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if p + PREFETCH_ROWS < kc {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let ahead = src.wrapping_add((p + PREFETCH_ROWS) * rs);
            // Every line of the row: every 16th value and the last (an unaligned row's last line).
            for l in 0..N.div_ceil(16) {
                // SAFETY: a prefetch never faults (and the row lies inside B anyway).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * l).cast()) };
            }
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(N - 1).cast()) };
        }
        // SAFETY: row p < kc holds N values (the function's contract).
        let row = unsafe { &*src.add(p * rs).cast::<[f32; N]>() };
        dst.copy_from_slice(row);
    }
}
