//! Any text into the adapter's `Endpoint` parser; see `endpoint_checks::check_endpoint_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wirecall_fuzz::check_endpoint_parse(data);
});
