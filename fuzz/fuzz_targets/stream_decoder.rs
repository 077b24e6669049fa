//! A stream of frames and garbage through `FrameDecoder`, split anywhere; see `checks::check_stream_decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wirecall_fuzz::check_stream_decoder(data);
});
