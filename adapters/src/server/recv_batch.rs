//! Many datagrams in one system call: `recvmmsg(2)` for the datagram endpoints.
//!
//! Under edge-triggered epoll a datagram socket read one `recvfrom` at a time must be read
//! until the kernel says `EAGAIN`, since a datagram queue has no "short read": a
//! ping-pong call then costs `epoll_wait`, `recvfrom`, `sendto` and a `recvfrom` that finds
//! nothing, 4 system calls where raw code makes 2. `recvmmsg` with `MSG_DONTWAIT` returns
//! what is queued, up to the batch: a batch that comes back short found the queue empty, so
//! the socket is read again only after its next readable event (3 per ping-pong call), and
//! under load one call receives up to [`MAX_SLOTS`] datagrams. (A read after a short
//! batch offers only [`NARROW_SLOTS`], so a ping-pong call does not set up 32 headers for
//! one datagram; a narrow batch that comes back full is followed by a wide one.)
//!
//! Stopping at a short batch loses nothing: the kernel wakes the poller for every datagram
//! queued after the batch was read (an edge per arrival), and an error it keeps for the next
//! call (an ICMP port unreachable that came mid-batch) came with a wake-up of its own.
//!
//! Neither std nor rustix has `recvmmsg`, and nix's reuses each slot's address length as
//! the kernel left it, so a Unix sender with a longer path than the slot's last one would
//! be read truncated (nix-rust/nix#2813). So this module calls libc itself, in one
//! `unsafe` block whose proof is beside it; everything the kernel wrote is then read as
//! plain bytes. The sender's address is decoded from those bytes by safe code: an
//! `AF_INET`/`AF_INET6` one into a [`SocketAddr`], an `AF_UNIX` pathname into a path.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The most datagrams one batch receives.
pub(super) const MAX_SLOTS: usize = 32;
/// Receive memory a batch aims at: a batch of `udp:`'s 1,233-byte slots has the full 32, one
/// of `unix-dgram:`'s 65,537-byte slots has [`MIN_SLOTS`].
const TARGET_BYTES: usize = 64 * 1024;
/// The fewest slots: with one, every batch would be "full" and the socket read again.
const MIN_SLOTS: usize = 2;
/// The slots of a narrow batch, the one read after a batch that came back short: a
/// ping-pong call's read sets up (and the stack zeroes) this many headers, not
/// [`MAX_SLOTS`], which cost about 350 instructions a call; a narrow batch that comes back
/// full makes the next one wide.
const NARROW_SLOTS: usize = 4;
/// The room for a sender's address: `sockaddr_storage` (128 bytes on Linux), which holds
/// `sockaddr_in`, `sockaddr_in6` and `sockaddr_un` (110).
const NAME_LEN: usize = 128;

/// Receive slots and what the last [`recv`](Self::recv) put in them.
pub(super) struct RecvBatch {
    /// `slots` datagram buffers of `stride` bytes, one after another.
    buf: Box<[u8]>,
    stride: usize,
    /// Each slot's sender address as the kernel wrote it.
    names: Box<[[u8; NAME_LEN]]>,
    /// Each received datagram's (length, address length).
    got: Vec<(usize, usize)>,
    /// The slots the last [`recv`](Self::recv) offered the kernel.
    offered: usize,
    /// The last batch came back full: offer every slot next time.
    wide: bool,
}

impl Default for RecvBatch {
    /// No slots (allocates nothing): what stands in while a batch is lent out.
    fn default() -> Self {
        Self {
            buf: Box::default(),
            stride: 1,
            names: Box::default(),
            got: Vec::new(),
            offered: 0,
            wide: false,
        }
    }
}

impl RecvBatch {
    /// Slots of `stride` bytes (the largest datagram plus one, so an oversized one shows as
    /// such), as many as [`TARGET_BYTES`] allows within [`MIN_SLOTS`]..=[`MAX_SLOTS`].
    pub(super) fn new(stride: usize) -> Self {
        let stride = stride.max(1);
        let slots = (TARGET_BYTES / stride).clamp(MIN_SLOTS, MAX_SLOTS);
        Self {
            buf: vec![0u8; stride.saturating_mul(slots)].into_boxed_slice(),
            stride,
            names: vec![[0u8; NAME_LEN]; slots].into_boxed_slice(),
            got: Vec::with_capacity(slots),
            offered: 0,
            wide: false,
        }
    }

    /// How many datagrams a batch can hold.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.names.len()
    }

    /// The first slot, for a single read (`recvmsg` with credentials) into the same memory.
    pub(super) fn first_slot_mut(&mut self) -> &mut [u8] {
        let stride = self.stride;
        self.buf.get_mut(..stride).unwrap_or_default()
    }

    /// Receives what is queued on `fd`, without waiting: up to [`NARROW_SLOTS`] datagrams
    /// after a batch that came back short, up to [`slots`](Self::slots) after a full one.
    /// Returns how many. `Err` with `WouldBlock` when nothing was queued.
    pub(super) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let got = if self.wide {
            self.recv_into::<MAX_SLOTS>(fd)
        } else {
            self.recv_into::<NARROW_SLOTS>(fd)
        };
        self.wide = self.was_full();
        got
    }

    /// [`recv`](Self::recv) offering at most `N` slots.
    fn recv_into<const N: usize>(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.got.clear();
        self.offered = 0;
        // SAFETY: `iovec` is a plain C struct of a raw pointer and a length, for which
        // all-zero bytes are a valid value (a null pointer, a zero length).
        let mut iovs: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        // SAFETY: `mmsghdr` is a plain C struct of integers and raw pointers (with its
        // `msghdr`), for which all-zero bytes are a valid value.
        let mut hdrs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        let chunks = self.buf.chunks_exact_mut(self.stride);
        let mut set_up = 0usize;
        for ((chunk, name), (iov, hdr)) in chunks
            .zip(self.names.iter_mut())
            .zip(iovs.iter_mut().zip(hdrs.iter_mut()))
        {
            iov.iov_base = chunk.as_mut_ptr().cast();
            iov.iov_len = chunk.len();
            hdr.msg_hdr.msg_name = name.as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            hdr.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            hdr.msg_hdr.msg_iovlen = 1;
            set_up = set_up.saturating_add(1);
        }
        if set_up == 0 {
            // No slots (a batch lent out): nothing can be read into it.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.offered = set_up;
        let vlen = libc::c_uint::try_from(set_up).unwrap_or(1);
        // SAFETY: the first `set_up` headers of `hdrs` were each set up above with a fresh
        // capacity: `msg_name` points at its own `NAME_LEN`-byte array in `self.names`,
        // `msg_namelen` says `NAME_LEN`, `msg_iov` at one `iovec` in `iovs` that points at
        // a distinct `stride`-byte chunk of `self.buf` with that length; no control buffer.
        // All of it is borrowed mutably for this statement only (`self` is `&mut`, `iovs`
        // and `hdrs` are locals), so the kernel writes only into memory we own and nothing
        // else reads it meanwhile. `vlen` is the number of headers set up above, at most
        // `hdrs.len()` (N) and at least 1.
        // A null timeout and MSG_DONTWAIT: the call does not block.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for hdr in hdrs.iter().take(n.min(set_up)) {
            let len = usize::try_from(hdr.msg_len).unwrap_or(0).min(self.stride);
            let name_len = usize::try_from(hdr.msg_hdr.msg_namelen)
                .unwrap_or(0)
                .min(NAME_LEN);
            self.got.push((len, name_len));
        }
        Ok(self.got.len())
    }

    /// `true` when the last [`recv`](Self::recv) filled every slot it offered: more may
    /// wait.
    pub(super) fn was_full(&self) -> bool {
        !self.got.is_empty() && self.got.len() >= self.offered
    }

    /// The `i`-th datagram of the last [`recv`](Self::recv) and its sender's address bytes.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(len, name_len) = self.got.get(i)?;
        let start = i.checked_mul(self.stride)?;
        let data = self.buf.get(start..start.checked_add(len)?)?;
        let name = self.names.get(i)?.get(..name_len)?;
        Some((data, name))
    }
}

/// The address family in the first two bytes of a `sockaddr`, in host order.
fn family(name: &[u8]) -> Option<libc::sa_family_t> {
    let bytes: [u8; 2] = name.get(..2)?.try_into().ok()?;
    Some(libc::sa_family_t::from_ne_bytes(bytes))
}

/// Four bytes at `at`.
fn four(name: &[u8], at: usize) -> Option<[u8; 4]> {
    name.get(at..at.checked_add(4)?)?.try_into().ok()
}

/// An IPv4 or IPv6 sender (`sockaddr_in` / `sockaddr_in6`); `None` for any other family or
/// a short name.
pub(super) fn inet_addr(name: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family(name)?) {
        libc::AF_INET => {
            let ip = Ipv4Addr::from(four(name, 4)?);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            // As std's conversion of a `sockaddr_in6`: the field as the kernel stores it.
            let flow = u32::from_ne_bytes(four(name, 4)?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(four(name, 24)?);
            let addr = SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope);
            Some(SocketAddr::V6(addr))
        }
        _ => None,
    }
}

/// A Unix sender's path (`sockaddr_un` of a socket bound to a file); `None` for an unnamed
/// sender (the name is only the family), an abstract one (its path starts with a NUL) or
/// another family.
pub(super) fn unix_path(name: &[u8]) -> Option<&Path> {
    if libc::c_int::from(family(name)?) != libc::AF_UNIX {
        return None;
    }
    let path = name.get(2..)?;
    let path = path.split(|&b| b == 0).next()?;
    (!path.is_empty()).then(|| Path::new(std::ffi::OsStr::from_bytes(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_batch_reads_what_is_queued_and_comes_back_short() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("s")).unwrap();
        let short = UnixDatagram::bind(dir.path().join("a")).unwrap();
        // A longer path after a shorter one: each slot's address room is full again.
        let long = UnixDatagram::bind(dir.path().join("a-much-longer-name.sock")).unwrap();
        short.send_to(b"one", dir.path().join("s")).unwrap();
        long.send_to(b"two!", dir.path().join("s")).unwrap();
        let mut batch = RecvBatch::new(8);
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 2);
        assert!(!batch.was_full() || batch.slots() == 2);
        let (data, name) = batch.get(0).unwrap();
        assert_eq!(data, b"one");
        assert_eq!(unix_path(name).unwrap(), dir.path().join("a"));
        let (data, name) = batch.get(1).unwrap();
        assert_eq!(data, b"two!");
        assert_eq!(
            unix_path(name).unwrap(),
            dir.path().join("a-much-longer-name.sock")
        );
        assert!(batch.get(2).is_none());
        // Nothing queued: WouldBlock.
        let e = batch.recv(server.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // The same slots, again, after the longer name: the short one reads whole.
        short.send_to(b"x", dir.path().join("s")).unwrap();
        long.send_to(b"y", dir.path().join("s")).unwrap();
        short.send_to(b"z", dir.path().join("s")).unwrap();
        let n = batch.recv(server.as_fd()).unwrap();
        let paths: Vec<_> = (0..n)
            .map(|i| unix_path(batch.get(i).unwrap().1).unwrap().to_path_buf())
            .collect();
        assert_eq!(paths.first(), Some(&dir.path().join("a")));
        assert_eq!(
            paths.get(1),
            Some(&dir.path().join("a-much-longer-name.sock"))
        );
    }

    #[test]
    fn a_full_batch_says_so_and_an_oversized_datagram_fills_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("s")).unwrap();
        let client = UnixDatagram::bind(dir.path().join("c")).unwrap();
        // Large slots: the fewest, two (a Unix datagram queue holds only ~10).
        let mut batch = RecvBatch::new(40_000);
        assert_eq!(batch.slots(), MIN_SLOTS);
        for _ in 0..3 {
            client.send_to(b"three", dir.path().join("s")).unwrap();
        }
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 2);
        assert!(batch.was_full());
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
        assert!(!batch.was_full());
        // A datagram longer than its slot reads as the slot's length (the caller's slots
        // are one byte longer than the largest datagram, so it sees an oversized one).
        let mut small = RecvBatch::new(4);
        client.send_to(b"toolong", dir.path().join("s")).unwrap();
        assert_eq!(small.recv(server.as_fd()).unwrap(), 1);
        assert_eq!(small.get(0).unwrap().0, b"tool");
    }

    #[test]
    fn a_full_narrow_batch_is_followed_by_a_wide_one() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut batch = RecvBatch::new(1233);
        assert_eq!(batch.slots(), MAX_SLOTS);
        for i in 0..10u8 {
            client.send_to(&[i], to).unwrap();
        }
        assert_eq!(batch.recv(server.as_fd()).unwrap(), NARROW_SLOTS);
        assert!(batch.was_full(), "a narrow batch filled: more may wait");
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 10 - NARROW_SLOTS);
        assert!(!batch.was_full());
        let got: Vec<u8> = (0..10 - NARROW_SLOTS)
            .map(|i| batch.get(i).unwrap().0[0])
            .collect();
        assert_eq!(got, (4..10).collect::<Vec<u8>>(), "in order, none lost");
        client.send_to(b"x", to).unwrap();
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
        assert_eq!(
            batch.offered, NARROW_SLOTS,
            "narrow again after a short batch"
        );
    }

    #[test]
    fn udp_senders_of_both_families_decode() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(server) = std::net::UdpSocket::bind(bind) else {
                continue; // no IPv6 on this host
            };
            let client = std::net::UdpSocket::bind(bind).unwrap();
            client.send_to(b"hi", server.local_addr().unwrap()).unwrap();
            let mut batch = RecvBatch::new(1233);
            assert_eq!(batch.slots(), MAX_SLOTS);
            assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
            let (data, name) = batch.get(0).unwrap();
            assert_eq!(data, b"hi");
            assert_eq!(inet_addr(name), Some(client.local_addr().unwrap()));
            assert_eq!(unix_path(name), None);
        }
    }

    /// A `sockaddr_in6` as the kernel lays it out: family and the 32-bit fields in host
    /// order, the port in network order (std reads flowinfo and scope the same way).
    #[test]
    fn an_ipv6_sender_keeps_its_flow_and_scope() {
        let family = libc::sa_family_t::try_from(libc::AF_INET6).unwrap();
        let ip = Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4);
        let mut name = Vec::new();
        name.extend_from_slice(&family.to_ne_bytes());
        name.extend_from_slice(&7000u16.to_be_bytes());
        name.extend_from_slice(&0x0001_2345u32.to_ne_bytes());
        name.extend_from_slice(&ip.octets());
        name.extend_from_slice(&3u32.to_ne_bytes());
        let want = SocketAddr::V6(SocketAddrV6::new(ip, 7000, 0x0001_2345, 3));
        assert_eq!(inet_addr(&name), Some(want));
        assert_eq!(inet_addr(&name[..27]), None, "short");
    }

    #[test]
    fn names_that_are_not_addresses_decode_to_nothing() {
        assert_eq!(inet_addr(&[]), None);
        assert_eq!(unix_path(&[]), None);
        let unix = libc::sa_family_t::try_from(libc::AF_UNIX)
            .unwrap()
            .to_ne_bytes();
        assert_eq!(unix_path(&unix), None, "an unnamed sender");
        let abstract_name = [unix[0], unix[1], 0, b'x'];
        assert_eq!(unix_path(&abstract_name), None);
        let inet = libc::sa_family_t::try_from(libc::AF_INET)
            .unwrap()
            .to_ne_bytes();
        assert_eq!(inet_addr(&[inet[0], inet[1], 0, 80, 127]), None, "short");
    }
}
