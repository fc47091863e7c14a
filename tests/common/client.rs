//! A tiny blocking HTTP/1.1 client: raw bytes out, one parsed response in, keep-alive reuse,
//! and an incremental body reader for streamed (SSE) responses.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::http::{self, Framing, Headers};
use super::IO_TIMEOUT;

/// A request to serialize; `Host` defaults to the address the client connected to.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    host: Option<String>,
    headers: Headers,
    body: Option<Vec<u8>>,
    chunks: Option<Vec<Vec<u8>>>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            host: None,
            headers: Headers::default(),
            body: None,
            chunks: None,
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    /// `POST target`.
    pub fn post(target: &str) -> Request {
        Request::new("POST", target)
    }

    /// Sends this `Host` value instead of the connected address.
    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.into());
        self
    }

    /// Adds a header line (kept in order, case as given).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.0.push((name.into(), value.into()));
        self
    }

    /// A body sent with Content-Length (unless a Content-Length header was given by hand).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// A JSON body with its Content-Type.
    pub fn json(self, body: impl Into<Vec<u8>>) -> Request {
        self.header("Content-Type", "application/json").body(body)
    }

    /// A body sent with chunked transfer coding, one wire chunk per element.
    pub fn chunked_body(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.chunks = Some(chunks);
        self
    }

    /// The bytes on the wire, with `default_host` as Host unless [`Request::host`] was set.
    pub fn to_bytes(&self, default_host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        let host = self.host.as_deref().unwrap_or(default_host);
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        self.headers.write_to(&mut out);
        if let Some(chunks) = &self.chunks {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(&http::encode_chunked(chunks));
            return out;
        }
        if let Some(body) = &self.body {
            if !self.headers.contains("content-length") {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
            return out;
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A status line and headers.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// The transport under a client: plain TCP or rustls over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One client connection; every read and write times out after [`IO_TIMEOUT`].
pub struct Client {
    reader: BufReader<Stream>,
    host: String,
}

impl Client {
    /// Connects over plain TCP.
    pub fn connect(addr: SocketAddr) -> Client {
        let tcp = open_tcp(addr);
        Client {
            reader: BufReader::new(Stream::Plain(tcp)),
            host: addr.to_string(),
        }
    }

    /// Connects over TLS, verifying the server as `localhost` with `config`'s roots.
    pub fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Client> {
        Client::connect_tls_as(addr, config, "localhost")
    }

    /// Connects over TLS sending `name` as SNI and verifying the server as `name`; the
    /// Host header defaults to `name:port`.
    pub fn connect_tls_as(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Client> {
        let tcp = open_tcp(addr);
        let server_name =
            rustls::pki_types::ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, server_name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Client {
            reader: BufReader::new(Stream::Tls(Box::new(tls))),
            host: format!("{name}:{}", addr.port()),
        })
    }

    /// The TLS session of this connection (`None` on plain TCP).
    pub fn tls(&self) -> Option<&rustls::ClientConnection> {
        match self.reader.get_ref() {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(&tls.conn),
        }
    }

    /// The leaf certificate the server presented (TLS only).
    pub fn peer_leaf(&self) -> Option<Vec<u8>> {
        Some(self.tls()?.peer_certificates()?.first()?.to_vec())
    }

    /// Changes the read timeout (for deliberate short waits in tests).
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.reader
            .get_ref()
            .tcp()
            .set_read_timeout(Some(timeout))
            .expect("setting read timeout");
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Writes a request.
    pub fn send(&mut self, request: &Request) -> io::Result<()> {
        let bytes = request.to_bytes(&self.host);
        self.send_raw(&bytes)
    }

    /// Reads the next final response head, skipping 1xx interim responses.
    pub fn read_head(&mut self) -> io::Result<ResponseHead> {
        loop {
            let head = http::read_head(&mut self.reader)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection before a response",
                )
            })?;
            let mut parts = head.start_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|_| version.starts_with("HTTP/1."))
                .ok_or_else(|| http::invalid(format!("bad status line {:?}", head.start_line)))?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let reason = parts.next().unwrap_or("").to_string();
            return Ok(ResponseHead {
                status,
                reason,
                headers: head.headers,
            });
        }
    }

    /// An incremental reader over the body that follows `head` (a response to `method`).
    pub fn body_stream(&mut self, method: &str, head: &ResponseHead) -> io::Result<BodyStream<'_>> {
        let framing = Framing::of_response(method, head.status, &head.headers)?;
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Ok(BodyStream {
            reader: &mut self.reader,
            framing,
            remaining,
            done: framing == Framing::Empty,
        })
    }

    /// Reads one whole response to a request with `method`.
    pub fn try_read_response(&mut self, method: &str) -> io::Result<Response> {
        let head = self.read_head()?;
        let framing = Framing::of_response(method, head.status, &head.headers)?;
        let body = http::read_body(&mut self.reader, framing)?;
        Ok(Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body,
        })
    }

    /// Sends `request` and reads its response.
    pub fn try_request(&mut self, request: &Request) -> io::Result<Response> {
        self.send(request)?;
        self.try_read_response(&request.method)
    }

    /// Sends `request` and reads its response; panics with context on any I/O error.
    pub fn request(&mut self, request: &Request) -> Response {
        self.try_request(request).unwrap_or_else(|e| {
            panic!(
                "{} {} failed: {e} ({:?})",
                request.method,
                request.target,
                e.kind()
            )
        })
    }

    /// Whether response bytes are already waiting to be read (never blocks).
    pub fn response_ready(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let tcp = self.reader.get_ref().tcp();
        tcp.set_nonblocking(true).expect("non-blocking");
        let mut probe = [0u8; 1];
        let ready =
            !matches!(tcp.peek(&mut probe), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
        tcp.set_nonblocking(false).expect("blocking");
        ready
    }

    /// Reads everything until the server closes the connection. Over TLS it only reads:
    /// rustls' own read would first try to send whatever this client wrote after the server
    /// gave up on it, and fail on the closed socket before the answer is read.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut all = self.reader.buffer().to_vec();
        self.reader.consume(all.len());
        match self.reader.get_mut() {
            Stream::Plain(tcp) => {
                tcp.read_to_end(&mut all)?;
            }
            Stream::Tls(tls) => loop {
                match tls.conn.reader().read_to_end(&mut all) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if tls.conn.read_tls(&mut tls.sock)? == 0 {
                    break;
                }
                tls.conn.process_new_packets().map_err(io::Error::other)?;
            },
        }
        Ok(all)
    }

    /// Whether the server has closed the connection (waits up to the read timeout for EOF).
    pub fn closed_by_peer(&mut self) -> bool {
        matches!(self.reader.fill_buf(), Ok([]))
    }
}

fn open_tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    tcp.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    tcp.set_nodelay(true).expect("nodelay");
    tcp
}

/// Reads a response body piece by piece as it arrives.
pub struct BodyStream<'a> {
    reader: &'a mut BufReader<Stream>,
    framing: Framing,
    remaining: u64,
    done: bool,
}

impl BodyStream<'_> {
    /// The next bytes of the body as soon as any are available; `None` at its end.
    pub fn next_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::Empty => Ok(None),
            Framing::Chunked => {
                let chunk = http::read_chunk(self.reader)?;
                self.done = chunk.is_none();
                Ok(chunk)
            }
            Framing::Length(_) => {
                let available = self.reader.fill_buf()?;
                if available.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("body ended with {} bytes still due", self.remaining),
                    ));
                }
                let n = available.len().min(self.remaining as usize);
                let bytes = available[..n].to_vec();
                self.reader.consume(n);
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                Ok(Some(bytes))
            }
            Framing::UntilClose => {
                let available = self.reader.fill_buf()?;
                if available.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                let bytes = available.to_vec();
                self.reader.consume(bytes.len());
                Ok(Some(bytes))
            }
        }
    }

    /// Reads until at least `n` more bytes arrived and returns them all (may be more).
    pub fn read_at_least(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next_bytes()? {
                Some(bytes) => got.extend_from_slice(&bytes),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("body ended after {} of {n} bytes", got.len()),
                    ))
                }
            }
        }
        Ok(got)
    }

    /// Reads the rest of the body.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(bytes) = self.next_bytes()? {
            all.extend_from_slice(&bytes);
        }
        Ok(all)
    }
}
