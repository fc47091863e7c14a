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

/// A TLS stream, and whether a read or a write on it was cut off.
///
/// A read or write given up on (a timeout drops its future) leaves monoio-rustls without
/// that direction's buffer: the next operation needing it would panic, taking the worker
/// with it. So after a cut-off write nothing more is done with the stream (a failing read
/// sends its alert through the write buffer too); after a cut-off read, writes still work
/// (they have their own buffer), so a 408 can still be answered and close_notify sent.
/// (On plain TCP a dropped operation leaves nothing behind.)
pub struct TlsClient {
    stream: ServerTlsStream<TcpStream>,
    /// A read is under way, or was cut off.
    reading: bool,
    /// A write (or close_notify) is under way, or was cut off.
    writing: bool,
}

impl From<Box<ServerTlsStream<TcpStream>>> for ClientStream {
    fn from(stream: Box<ServerTlsStream<TcpStream>>) -> Self {
        ClientStream::Tls(Box::new(TlsClient {
            stream: *stream,
            reading: false,
            writing: false,
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
                if tls.reading || tls.writing {
                    return (Err(interrupted()), buf);
                }
                tls.reading = true;
                let result = tls.stream.read(buf).await;
                tls.reading = false;
                result
            }
        }
    }

    /// Writes the whole buffer.
    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(tls) => {
                if tls.writing {
                    return (Err(interrupted()), buf);
                }
                tls.writing = true;
                let result = tls.stream.write_all(buf).await;
                tls.writing = false;
                result
            }
        }
    }

    /// Ends a TLS session with close_notify, so a client reading to EOF knows the end is
    /// real and not a truncation; nothing to do on plain TCP, or after a cut-off operation.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(_) => Ok(()),
            ClientStream::Tls(tls) if tls.writing => Err(interrupted()),
            ClientStream::Tls(tls) => {
                tls.writing = true;
                let result = tls.stream.shutdown().await;
                tls.writing = false;
                result
            }
        }
    }
}
