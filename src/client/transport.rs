//! One client connection, plain TCP or TLS, with owned-buffer I/O.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::pki_types::ServerName;

enum Transport {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

/// A connection to an origin (the upstream, a webhook, the token endpoint).
pub struct Connection {
    transport: Transport,
    /// The socket, for the non-blocking liveness peek while pooled.
    fd: RawFd,
    /// Came out of the pool (already carried a request).
    pub reused: bool,
}

/// Why a connection could not be opened to any of the addresses.
pub(super) enum OpenError {
    /// Every address refused or failed; the last error.
    Connect(io::Error),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
}

impl Connection {
    /// Connects to the first address that accepts, then does the TLS handshake when
    /// `tls` names a connector and the server name to verify.
    pub(super) async fn open(
        addrs: &[SocketAddr],
        tls: Option<&(TlsConnector, ServerName<'static>)>,
    ) -> Result<Connection, OpenError> {
        let mut last_error = None;
        for addr in addrs {
            let stream = match TcpStream::connect_addr(*addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            let transport = match tls {
                None => Transport::Plain(stream),
                Some((connector, name)) => match connector.connect(name.clone(), stream).await {
                    Ok(tls) => Transport::Tls(Box::new(tls)),
                    Err(e) => return Err(OpenError::Tls(e.to_string())),
                },
            };
            return Ok(Connection {
                transport,
                fd,
                reused: false,
            });
        }
        Err(OpenError::Connect(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
        })))
    }

    /// Reads into the buffer's spare capacity.
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
        }
    }

    /// One write call; the count tells how much was accepted.
    pub async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.write(buf).await,
            Transport::Tls(s) => s.write(buf).await,
        }
    }

    /// Writes the whole buffer.
    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.write_all(buf).await,
            Transport::Tls(s) => s.write_all(buf).await,
        }
    }

    /// Whether [`Connection::readable`] means a read will find bytes (or EOF). Not so
    /// over TLS: rustls may hold decrypted bytes already, or need a whole record first.
    pub fn waits_without_buffer(&self) -> bool {
        matches!(self.transport, Transport::Plain(_))
    }

    /// Waits until the socket has something to read, holding no buffer meanwhile. Only
    /// meaningful when [`Connection::waits_without_buffer`]; over TLS it returns at once.
    pub async fn readable(&self) -> io::Result<()> {
        match &self.transport {
            // Not relaxed: on the epoll driver a stale readiness flag would end the wait
            // early and the read would then wait holding its buffer after all.
            Transport::Plain(s) => s.readable(false).await,
            Transport::Tls(_) => Ok(()),
        }
    }

    /// Whether the upstream reset the connection: a socket error of ECONNRESET or EPIPE is
    /// pending (EPIPE is how Linux records a reset that follows the peer's FIN). A reset
    /// answers bytes that reached a socket its owner had closed, or that it closed unread.
    pub fn reset_by_peer(&self) -> bool {
        let mut error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(SO_ERROR) into a c_int on a socket we own.
        let ok = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut error as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        ok && (error == libc::ECONNRESET || error == libc::EPIPE)
    }

    /// True if an idle connection still looks usable: nothing to read and no EOF.
    ///
    /// An idle HTTP/1.1 connection has no bytes in flight, so anything readable (a FIN,
    /// a TLS close_notify, a stray response) means it must not carry another request.
    pub fn idle_and_open(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv into a one-byte stack buffer on a socket we own.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

/// So that whoever sends a body (the client connection relaying a request body) can write
/// to any connection without knowing what it is.
impl AsyncWriteRent for Connection {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        Connection::write(self, buf).await
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, bufs: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.writev(bufs).await,
            Transport::Tls(s) => s.writev(bufs).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(s) => s.flush().await,
            Transport::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(s) => s.shutdown().await,
            Transport::Tls(s) => s.shutdown().await,
        }
    }
}
