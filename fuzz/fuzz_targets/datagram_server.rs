//! Scripts of datagrams, time and answers into a `DatagramServer`; see `datagram_checks::check_datagram_server`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wirecall_fuzz::check_datagram_server(data);
});
