//! Fuzz target: open bytes as a VHDX image (a whole image, or patches to the base image)
//! and read every sector.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"vhdxfile") {
        vhdx_fuzz::open_and_read(data);
    } else {
        vhdx_fuzz::patch_and_read(vhdx_fuzz::base_vhdx(), data);
    }
});
