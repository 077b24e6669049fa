//! Scripts of input, time, answers and closes into a `ServerConnection`; see `checks::check_server_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wirecall_fuzz::check_server_connection(data);
});
