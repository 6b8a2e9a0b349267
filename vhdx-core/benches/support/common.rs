//! What the read benchmarks (`benches/read.rs`, `examples/bench_read.rs`) share: a
//! page-aligned buffer and the random offset sequence.
//!
//! A plain `Vec` of 1 MiB or more starts 16 bytes into a page, and the kernel copies out of
//! the page cache markedly slower into such a buffer; both sides of every comparison use
//! [`Aligned`].

/// `n` bytes starting on a page boundary (kept with their backing `Vec`).
pub struct Aligned {
    v: Vec<u8>,
    start: usize,
    n: usize,
}

impl Aligned {
    /// A buffer of `n` bytes.
    pub fn new(n: usize) -> Self {
        let v = vec![1u8; n + 4096];
        let start = (4096 - v.as_ptr() as usize % 4096) % 4096;
        Aligned { v, start, n }
    }

    /// The aligned bytes.
    pub fn get(&mut self) -> &mut [u8] {
        &mut self.v[self.start..self.start + self.n]
    }
}

/// 4 KiB-aligned offsets inside the disk, from a fixed xorshift64 sequence (the same one the
/// C and Python peers in `scripts/` use: seed 0x9e3779b97f4a7c15, `x ^= x << 13; x ^= x >> 7;
/// x ^= x << 17`, offset = (x % (size / 4096)) * 4096).
pub fn random_offsets(size: u64, n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pages = size / 4096;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % pages) * 4096
        })
        .collect()
}
