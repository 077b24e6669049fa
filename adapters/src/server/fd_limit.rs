//! The open-file limit and the connections it allows: a server that accepts more
//! connections than it has descriptors for fails its accepts (`EMFILE`), and clients then
//! wait with neither a hello nor a refusal. So the connection limit is kept under the
//! descriptor limit, a spare descriptor lets an accept that fails for want of one still
//! refuse the connection in words, and [`raise_open_file_limit`] lifts the soft limit to
//! the hard one for a binary that wants every connection it may have.

use std::fs::File;

/// Descriptors a server keeps for itself besides its connections and endpoints: the
/// poller, its waker, the signal pipe, stdio, the spare, and room for what a function may
/// open (a log file, ...).
pub(super) const RESERVED: usize = 16;

/// The soft open-file limit, `None` when unlimited or unknown.
fn soft_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The connections a server can hold under the soft limit with `endpoints` descriptors
/// of its endpoints and event loops besides [`RESERVED`] ones:
/// `wanted` (its `max_connections`) or fewer, at least 1. Says so at start when it is
/// fewer.
pub(super) fn connection_room(wanted: usize, endpoints: usize) -> usize {
    let Some(limit) = soft_limit() else {
        return wanted;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let room = limit
        .saturating_sub(RESERVED)
        .saturating_sub(endpoints)
        .max(1);
    if room < wanted {
        log::warn!(
            "max_connections {wanted} is more than {limit} open files allow: at most {room} \
             connections at once (more are refused); raise the limit (ulimit -n) for more"
        );
        room
    } else {
        wanted
    }
}

/// Raises the soft open-file limit to the hard one (capped at 1,048,576, the largest
/// `max_connections`), as a server binary does at start so its connection limit is not cut
/// short by a low default soft limit (often 1,024). Process-wide, so a library leaves it
/// to the program. Returns the soft limit now, `None` when it could not be read or set.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cap = u64::try_from(crate::config::MAX_CONNECTIONS_LIMIT).unwrap_or(u64::MAX);
    let now = getrlimit(Resource::Nofile);
    let target = now.maximum.map_or(cap, |hard| hard.min(cap));
    match now.current {
        Some(soft) if soft >= target => return Some(soft),
        None => return None,
        Some(_) => {}
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            log::debug!("open-file limit raised to {target}");
            Some(target)
        }
        Err(e) => {
            log::debug!("cannot raise the open-file limit: {e}");
            now.current
        }
    }
}

/// A descriptor held in reserve: when an accept fails for want of descriptors, it is
/// closed so the connection waiting can be accepted and refused in words (rather than
/// left with neither a hello nor a refusal), then opened again.
#[derive(Debug)]
pub(super) struct Spare(Option<File>);

impl Spare {
    /// A spare descriptor (on `/dev/null`), or none if it cannot be opened.
    pub(super) fn new() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// Frees the spare descriptor for one accept; `false` when there was none.
    pub(super) fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes a descriptor in reserve again, if one is free.
    pub(super) fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

/// `true` for an accept error that means no descriptor (or kernel memory) was free.
pub(super) fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}
