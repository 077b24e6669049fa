//! The client's socket calls, made so that a blocking client costs no more system calls
//! than raw blocking code doing the same work: one `send` and one `recv` per ping-pong call,
//! and one of each per batch when calls are pipelined.
//!
//! The socket stays in blocking mode. Sends, and reads that must not wait, pass
//! `MSG_DONTWAIT`. A wait for answers is a plain blocking `recv`, bounded by the socket's
//! receive timeout (`SO_RCVTIMEO`) so that the core's timers (deadlines, retransmissions,
//! keepalive) still fire. Setting that timeout is a system call of its own, so it is set
//! only when a wait must end sooner than the timeout in force, or is more than four times
//! longer, and then to the largest power of two of microseconds that ends in time: a run of
//! calls with the same budget sets it once, and a long wait wakes early a few times at most
//! (an early wake costs one turn of the caller's loop, nothing else).
//!
//! The kernel runs the receive timeout on its timer wheel, which may fire it late by a
//! scheduler tick (10 ms at `HZ=100`) or by up to an eighth of a long timeout; the timeout
//! is set that much short of the wait. Waits shorter than [`PRECISE_BELOW`] use `poll(2)`
//! instead, whose timer is precise. So does a wait while bytes are still to be sent: the
//! send buffer is full then, and the client must read answers while it waits for room (a
//! server stops reading a client that does not read).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{RecvFlags, SendFlags, Shutdown};

use crate::stream::{interrupted, would_block};
use crate::tls::Session;

/// Waits shorter than this use `poll(2)`, which wakes on time; longer ones the receive
/// timeout, set short of the wait by its possible lateness.
const PRECISE_BELOW: Duration = Duration::from_millis(40);
/// The longest scheduler tick the receive timeout may overshoot by (10 ms at `HZ=100`).
const TICK: Duration = Duration::from_millis(10);
/// The longest single blocking wait. Without a timer the caller still wakes this often,
/// which costs nothing worth counting and keeps a wait bounded.
const LONGEST: Duration = Duration::from_secs(32);

/// A connected client socket in blocking mode. See the [module docs](self).
#[derive(Debug)]
pub(super) struct Socket {
    fd: OwnedFd,
    /// The receive timeout set on the socket now (`None`: never set, so unlimited).
    receive_timeout: Option<Duration>,
}

impl Socket {
    /// Wraps a connected socket, switching it to blocking mode.
    pub(super) fn new(fd: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, false)?;
        Ok(Self {
            fd,
            receive_timeout: None,
        })
    }

    /// The socket itself.
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Sends what the socket takes now, without waiting.
    pub(super) fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(
            &self.fd,
            buf,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )?)
    }

    /// Reads what has arrived, without waiting (`WouldBlock` when nothing has).
    pub(super) fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::net::recv(&self.fd, buf, RecvFlags::DONTWAIT)?.0)
    }

    /// Waits up to `timeout` (without one, for a long while) for bytes and reads them:
    /// `Ok(None)` when the time passed first or a signal came.
    pub(super) fn recv_wait(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<usize>> {
        let limit = timeout.map_or(LONGEST, |t| t.min(LONGEST));
        if limit < PRECISE_BELOW {
            if !self.wait_ready(false, Some(limit))? {
                return Ok(None);
            }
            return match self.recv_now(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if would_block(&e) || interrupted(&e) => Ok(None),
                Err(e) => Err(e),
            };
        }
        // Ends before `limit` even when the timer wheel fires late: by a tick, or by up to
        // an eighth of a long timeout.
        let enough = limit.saturating_sub(TICK.max(limit / 8));
        let reset = self
            .receive_timeout
            .is_none_or(|set| set > enough || set.saturating_mul(4) < enough);
        if reset {
            let set = power_of_two_at_most(enough);
            set_socket_timeout(&self.fd, Timeout::Recv, Some(set))?;
            self.receive_timeout = Some(set);
        }
        match rustix::net::recv(&self.fd, buf, RecvFlags::empty()) {
            Ok((n, _)) => Ok(Some(n)),
            Err(Errno::AGAIN | Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout` until the socket is readable, or writable too when `writable`;
    /// `true` if it is (or may be), `false` when the time passed or a signal came.
    pub(super) fn wait_ready(&self, writable: bool, timeout: Option<Duration>) -> io::Result<bool> {
        let mut flags = PollFlags::IN;
        if writable {
            flags |= PollFlags::OUT;
        }
        let mut fds = [PollFd::new(&self.fd, flags)];
        let limit = timeout.map_or(LONGEST, |t| t.min(LONGEST));
        let timespec = Timespec::try_from(limit).unwrap_or(Timespec {
            tv_sec: 32,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&timespec)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes the sending half: the peer reads end-of-stream after what was sent.
    pub(super) fn shutdown_write(&self) -> io::Result<()> {
        Ok(rustix::net::shutdown(&self.fd, Shutdown::Write)?)
    }
}

/// A stream client's socket: plain, or with a TLS session over it. The TLS one offers the
/// same calls with plaintext: a read drains the socket into the session before it comes
/// back short, and a wait first hands over plaintext the session already holds (it would
/// otherwise wait on a socket that has nothing more to say).
#[derive(Debug)]
pub(super) enum StreamSocket {
    /// Unix or TCP.
    Plain(Socket),
    /// TLS over TCP.
    Tls(Box<TlsSocket>),
}

/// A socket and the TLS session over it.
#[derive(Debug)]
pub(super) struct TlsSocket {
    socket: Socket,
    session: Session,
}

/// The socket as the non-blocking reader and writer rustls reads and writes through.
struct Now<'a>(&'a Socket);

impl io::Read for Now<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv_now(buf)
    }
}

impl io::Write for Now<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_now(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StreamSocket {
    /// A TLS socket: the session over the connected socket, its handshake done before
    /// `timeout` passes (so a certificate that does not verify is known before anything
    /// is sent). The error carries a [`TlsFailure`](crate::tls::TlsFailure) when TLS
    /// itself failed.
    pub(super) fn tls(socket: Socket, mut session: Session, timeout: Duration) -> io::Result<Self> {
        let start = std::time::Instant::now();
        while !session.handshake_step(&mut Now(&socket))? {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TLS handshake within {} ms: is it a TLS server?",
                        timeout.as_millis()
                    ),
                ));
            }
            socket.wait_ready(session.wants_write(), Some(left))?;
        }
        Ok(Self::Tls(Box::new(TlsSocket { socket, session })))
    }

    /// [`Socket::send_now`], through TLS when there is TLS.
    pub(super) fn send_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.send_now(buf),
            Self::Tls(t) => t.session.write(&mut Now(&t.socket), buf),
        }
    }

    /// [`Socket::recv_now`], through TLS when there is TLS.
    pub(super) fn recv_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.recv_now(buf),
            Self::Tls(t) => t.session.read(&mut Now(&t.socket), buf),
        }
    }

    /// [`Socket::recv_wait`], through TLS when there is TLS (waiting with `poll(2)`).
    pub(super) fn recv_wait(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<usize>> {
        let t = match self {
            Self::Plain(s) => return s.recv_wait(buf, timeout),
            Self::Tls(t) => t,
        };
        match t.session.read(&mut Now(&t.socket), buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if would_block(&e) || interrupted(&e) => {}
            Err(e) => return Err(e),
        }
        if !t.socket.wait_ready(t.session.wants_write(), timeout)? {
            return Ok(None);
        }
        let _ = t.session.flush(&mut Now(&t.socket))?;
        match t.session.read(&mut Now(&t.socket), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if would_block(&e) || interrupted(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Socket::wait_ready`].
    pub(super) fn wait_ready(&self, writable: bool, timeout: Option<Duration>) -> io::Result<bool> {
        match self {
            Self::Plain(s) => s.wait_ready(writable, timeout),
            Self::Tls(t) => t.socket.wait_ready(writable, timeout),
        }
    }

    /// TLS holds ciphertext the socket has not taken yet.
    pub(super) fn wants_write(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(t) => t.session.wants_write(),
        }
    }

    /// Sends ciphertext TLS still holds, as far as the socket takes it now.
    pub(super) fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Self::Plain(_) => Ok(false),
            Self::Tls(t) => t.session.flush(&mut Now(&t.socket)),
        }
    }

    /// [`Socket::shutdown_write`]; TLS sends its close_notify first (as far as the socket
    /// takes it).
    pub(super) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown_write(),
            Self::Tls(t) => {
                if let Err(e) = t.session.close(&mut Now(&t.socket)) {
                    log::debug!("TLS close_notify: {e}");
                }
                t.socket.shutdown_write()
            }
        }
    }
}

/// The largest power of two of microseconds not above `d` (at least 1 µs).
fn power_of_two_at_most(d: Duration) -> Duration {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(1u64 << (63 - micros.leading_zeros()))
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn timeouts_round_down_to_powers_of_two() {
        assert_eq!(
            power_of_two_at_most(Duration::ZERO),
            Duration::from_micros(1)
        );
        assert_eq!(
            power_of_two_at_most(Duration::from_millis(96)),
            Duration::from_micros(65_536)
        );
        assert_eq!(
            power_of_two_at_most(Duration::from_micros(65_536)),
            Duration::from_micros(65_536)
        );
        assert_eq!(
            power_of_two_at_most(Duration::from_secs(5)),
            Duration::from_micros(4_194_304)
        );
    }

    fn pair() -> (Socket, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Socket::new(a.into()).unwrap(), b)
    }

    #[test]
    fn a_wait_ends_on_time_and_a_later_answer_is_read() {
        use std::io::Write;
        for wait in [Duration::from_millis(5), Duration::from_millis(60)] {
            let (mut socket, mut peer) = pair();
            let mut buf = [0u8; 16];
            let start = Instant::now();
            assert_eq!(socket.recv_wait(&mut buf, Some(wait)).unwrap(), None);
            let took = start.elapsed();
            // Bounded, not timed: it ended rather than waiting for ever.
            assert!(
                took <= wait + Duration::from_secs(2),
                "{took:?} for {wait:?}"
            );
            peer.write_all(b"hi").unwrap();
            assert_eq!(socket.recv_wait(&mut buf, Some(wait)).unwrap(), Some(2));
            assert_eq!(&buf[..2], b"hi");
        }
    }

    #[test]
    fn the_receive_timeout_follows_the_waits() {
        let (mut socket, _peer) = pair();
        let mut buf = [0u8; 4];
        assert_eq!(
            socket
                .recv_wait(&mut buf, Some(Duration::from_millis(60)))
                .unwrap(),
            None
        );
        let short = socket.receive_timeout.unwrap();
        assert!(short <= Duration::from_millis(50), "{short:?}");
        // A wait a little longer keeps it (no system call); one much longer raises it.
        assert_eq!(
            socket
                .recv_wait(&mut buf, Some(Duration::from_millis(80)))
                .unwrap(),
            None
        );
        assert_eq!(socket.receive_timeout, Some(short));
        assert_eq!(
            socket
                .recv_wait(&mut buf, Some(Duration::from_millis(400)))
                .unwrap(),
            None
        );
        let long = socket.receive_timeout.unwrap();
        assert!(
            long > short.saturating_mul(4) && long <= Duration::from_millis(350),
            "{long:?}"
        );
    }

    #[test]
    fn reads_and_sends_now_never_block() {
        let (socket, peer) = pair();
        let mut buf = [0u8; 16];
        let e = socket.recv_now(&mut buf).unwrap_err();
        assert!(would_block(&e));
        // Fill the peer's receive buffer: the send that does not fit would block.
        let chunk = [7u8; 4096];
        let mut sent = 0usize;
        loop {
            match socket.send_now(&chunk) {
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 64 << 20, "the send buffer never filled");
        }
        assert!(
            !socket
                .wait_ready(false, Some(Duration::from_millis(1)))
                .unwrap()
        );
        drop(peer);
        assert!(
            socket
                .wait_ready(true, Some(Duration::from_millis(100)))
                .unwrap()
        );
    }
}
