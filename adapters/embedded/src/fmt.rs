//! Logging shim: this driver's few log lines go to `log`, to `defmt`, or nowhere, as the
//! core's do (the same features select both). Literal formats in the subset both backends
//! understand; arguments are borrowed, so with no backend nothing is moved or unused.
#![allow(unused_macros)]

macro_rules! wce_log {
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
    ($($t:tt)*) => { wce_log!(trace, $($t)*) };
}
macro_rules! debug {
    ($($t:tt)*) => { wce_log!(debug, $($t)*) };
}
