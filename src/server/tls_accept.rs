//! A client of the TLS port, from accept to its first request: the first bytes peeked
//! (plain HTTP is told apart, the SNI name is read), then the handshake, all within the
//! header timeout. Every way this can fail is a [`Failure`] for the counters, never an
//! error that reaches the worker.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio_rustls::{ServerTlsStream, TlsAcceptor, TlsError};

use crate::conn::deadline::Deadline;
use crate::tls::client_hello::{inspect, Hello};
use crate::tls::Failure;

/// Most bytes peeked looking for a whole ClientHello (one record holds 16 KiB at most;
/// post-quantum key shares make hellos of 2 KiB and more).
const MAX_HELLO: usize = 32 * 1024;
/// The pauses before peeking again at a ClientHello that has arrived in part: the socket
/// stays readable while its bytes are unread, so readiness cannot say more came. Doubling
/// from the first to the last, so a client that stalls mid-hello costs a few wake-ups a
/// second until the timeout ends it.
const PARTIAL_HELLO_PAUSE: (Duration, Duration) =
    (Duration::from_millis(2), Duration::from_millis(250));

/// How a TLS client's first moments ended.
pub enum Accepted {
    /// A finished handshake and the SNI name the client sent.
    Tls(Box<ServerTlsStream<TcpStream>>, Option<String>),
    /// Plain HTTP: the caller answers it with a 400 over plain TCP.
    PlainHttp(TcpStream),
}

/// Peeks at the client's first bytes, then does the handshake, both within `limit`.
/// On failure the stream is already closed when this returns (so a caller counting
/// failures never counts a descriptor that is still open).
pub async fn accept(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    deadline: &Rc<Deadline>,
    limit: Duration,
) -> Result<Accepted, Failure> {
    let first_moments = async move {
        let server_name = match peek_hello(&stream).await? {
            Hello::PlainHttp => return Ok(Accepted::PlainHttp(stream)),
            Hello::Tls { server_name } => server_name,
            // Not TLS (or not parsable here): rustls will refuse it with a proper alert.
            Hello::Other | Hello::NeedMore => None,
        };
        match acceptor.accept(stream).await {
            Ok(tls) => Ok(Accepted::Tls(Box::new(tls), server_name)),
            Err(e) => Err(classify(e)),
        }
    };
    match deadline.within(limit, first_moments).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

/// Waits for enough bytes to tell what the client speaks, without consuming them.
async fn peek_hello(stream: &TcpStream) -> Result<Hello, Failure> {
    let mut buf = vec![0u8; 2048];
    let mut pause = PARTIAL_HELLO_PAUSE.0;
    loop {
        stream.readable(false).await.map_err(|_| Failure::Closed)?;
        // SAFETY: recv into our own buffer, on the socket we own; MSG_PEEK leaves the
        // bytes for the handshake to read.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return Err(Failure::Closed);
        }
        if n < 0 {
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                _ => return Err(Failure::Closed),
            }
        }
        let n = n as usize;
        match inspect(&buf[..n]) {
            Hello::NeedMore if n == buf.len() && n < MAX_HELLO => buf.resize(n * 2, 0),
            Hello::NeedMore if n == buf.len() => return Ok(Hello::Other),
            // A peek keeps returning the unread bytes after the client's FIN: ask for it.
            Hello::NeedMore if peer_closed(stream) => return Err(Failure::Closed),
            Hello::NeedMore => {
                monoio::time::sleep(pause).await;
                pause = (pause * 2).min(PARTIAL_HELLO_PAUSE.1);
            }
            seen => return Ok(seen),
        }
    }
}

/// Whether the client has shut down its side (it will send no more of its hello).
fn peer_closed(stream: &TcpStream) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one pollfd for the socket we own, without waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Sorts a failed handshake: the client went away, or TLS itself failed.
fn classify(e: TlsError) -> Failure {
    match e {
        TlsError::Io(e) => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Failure::Closed,
            _ => Failure::Protocol,
        },
        TlsError::Rustls(_) => Failure::Protocol,
    }
}
