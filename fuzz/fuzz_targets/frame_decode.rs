//! Any bytes into `Frame::decode`: round trip to the canonical form; see `checks::check_frame_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wirecall_fuzz::check_frame_decode(data);
});
