//! Scripts of calls, cancels, server bytes and time into a `ClientConnection`; see `checks::check_client_connection`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wirecall_fuzz::check_client_connection(data);
});
