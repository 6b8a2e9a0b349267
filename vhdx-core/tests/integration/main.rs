//! Integration tests of vhdx-core (one test binary; one module per area).

mod common;
mod vhdx_read;
