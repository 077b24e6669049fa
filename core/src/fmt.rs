//! Logging shim: routes the core's log lines to `log`, to `defmt`, or to nothing.
//!
//! Every macro takes a literal format string in the subset both backends understand (`{}` and
//! `{:?}`) and borrows its arguments, so with no backend selected nothing is moved and no
//! "unused" warning appears. Levels: `trace` per frame, `debug` per state change, `warn` for
//! peer misbehaviour. The core never logs at `error`: the caller decides what is an error.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` of wirecall-core are mutually exclusive");

macro_rules! wc_log {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::$level!($s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::$level!($s $(, $x)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! trace {
    ($($t:tt)*) => { wc_log!(trace, $($t)*) };
}
macro_rules! debug {
    ($($t:tt)*) => { wc_log!(debug, $($t)*) };
}
macro_rules! warn {
    ($($t:tt)*) => { wc_log!(warn, $($t)*) };
}
