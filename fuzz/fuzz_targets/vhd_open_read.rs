//! Fuzz target: open bytes as a VHD image (a whole image, or patches to the base image)
//! and read every sector.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"conectix") {
        vhdx_fuzz::open_and_read(data);
    } else {
        vhdx_fuzz::patch_and_read(vhdx_fuzz::base_vhd(), data);
    }
});
