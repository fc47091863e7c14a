//! The transport under a client connection: plain TCP or TLS over it. An enum rather than
//! a trait object: a plain connection pays one predictable branch per read or write, and
//! the TLS state is boxed so a plain connection stays as small as before.

use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::ServerTlsStream;

/// A client's stream, plain or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
}

/// A TLS stream, and whether an operation on it was cut off.
///
/// A read or write given up on (a timeout drops its future) leaves monoio-rustls without
/// its buffer: the next operation on the stream would panic, taking the worker with it.
/// After one, every operation fails instead; the connection has nothing left but a close.
/// (On plain TCP a dropped operation leaves nothing behind.)
pub struct TlsClient {
    stream: ServerTlsStream<TcpStream>,
    interrupted: bool,
}

impl From<Box<ServerTlsStream<TcpStream>>> for ClientStream {
    fn from(stream: Box<ServerTlsStream<TcpStream>>) -> Self {
        ClientStream::Tls(Box::new(TlsClient {
            stream: *stream,
            interrupted: false,
        }))
    }
}

fn interrupted() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "an earlier TLS read or write on this connection was cut off",
    )
}

impl ClientStream {
    /// Reads into the buffer's spare capacity (decrypted bytes over TLS).
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(tls) => {
                if tls.interrupted {
                    return (Err(interrupted()), buf);
                }
                tls.interrupted = true;
                let result = tls.stream.read(buf).await;
                tls.interrupted = false;
                result
            }
        }
    }

    /// Writes the whole buffer.
    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(tls) => {
                if tls.interrupted {
                    return (Err(interrupted()), buf);
                }
                tls.interrupted = true;
                let result = tls.stream.write_all(buf).await;
                tls.interrupted = false;
                result
            }
        }
    }

    /// Ends a TLS session with close_notify, so a client reading to EOF knows the end is
    /// real and not a truncation; nothing to do on plain TCP, or after a cut-off operation.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(_) => Ok(()),
            ClientStream::Tls(tls) if tls.interrupted => Err(interrupted()),
            ClientStream::Tls(tls) => {
                tls.interrupted = true;
                let result = tls.stream.shutdown().await;
                tls.interrupted = false;
                result
            }
        }
    }
}
