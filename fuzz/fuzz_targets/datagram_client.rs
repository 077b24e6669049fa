//! Scripts of datagrams, time and answers into a `DatagramClient`; see `datagram_checks::check_datagram_client`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wirecall_fuzz::check_datagram_client(data);
});
