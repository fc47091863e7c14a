//! The transport under a client connection: plain TCP or TLS over it. An enum rather than
//! a trait object: a plain connection pays one predictable branch per read or write, and
//! the TLS stream is boxed so a plain connection stays as small as before.

use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::ServerTlsStream;

/// A client's stream, plain or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<ServerTlsStream<TcpStream>>),
}

impl ClientStream {
    /// Reads into the buffer's spare capacity (decrypted bytes over TLS).
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(s) => s.read(buf).await,
        }
    }

    /// Writes the whole buffer.
    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(s) => s.write_all(buf).await,
        }
    }

    /// Ends a TLS session with close_notify, so a client reading to EOF knows the end is
    /// real and not a truncation; nothing to do on plain TCP.
    pub async fn close_notify(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(_) => Ok(()),
            ClientStream::Tls(s) => s.shutdown().await,
        }
    }
}
