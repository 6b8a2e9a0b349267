//! A page-aligned byte buffer for the read benchmarks (shared by `benches/read.rs` and
//! `examples/bench_read.rs`). A plain `Vec` of 1 MiB or more starts 16 bytes into a page, and
//! the kernel copies out of the page cache markedly slower into such a buffer; both sides of
//! every comparison use this one.

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
