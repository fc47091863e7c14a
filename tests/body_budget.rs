//! Request bodies held in memory draw on one process-wide budget, `NEXUS_MAX_BUFFERED_MB`
//! (issue 16, acceptance 3). Memory is taken as body bytes arrive, never reserved from a
//! declared length; a body that would go over the budget is answered 503 `api_error`;
//! the rest of nexus keeps serving; and a finished request gives its share back.

mod common;

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Framing};
use common::nexus::rss_kib_of;
use common::oauth::wait_for;
use common::*;

const MIB: usize = 1024 * 1024;
/// What each slow client declares: 30 MiB, under the 32 MiB request limit.
const DECLARED: usize = 30 * MIB;
/// What each slow client actually sends of it.
const SENT: usize = 3 * MIB;
const PIECE: usize = 64 * 1024;
/// Between pieces: slow enough that the clients are all in flight together.
const PAUSE: Duration = Duration::from_millis(10);
const CLIENTS: usize = 200;
/// The default budget (256 MiB) plus 64 MiB for everything else nexus holds, with
/// room to spare: acceptance 3's bound.
const RSS_BOUND_KIB: u64 = 400 * 1024;
/// How long a normal request may take while the slow bodies are in flight.
const NORMAL_BOUND: Duration = Duration::from_secs(5);
/// Bound on each phase of the load (600 MB over loopback; seconds on an idle machine).
const LOAD_WAIT: Duration = Duration::from_secs(120);
/// Writes wake this often to see whether the test is over or nexus has answered.
const WRITE_SLICE: Duration = Duration::from_millis(100);

/// The head of a `POST /v1/messages` declaring a `length`-byte body.
fn head(addr: SocketAddr, length: usize) -> String {
    format!(
        "POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {CLIENT_KEY}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// A Messages body of exactly `size` bytes (the user text pads it).
fn body_of_size(size: usize) -> Vec<u8> {
    let frame =
        r#"{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":""}]}"#;
    let pad = size.checked_sub(frame.len()).expect("body size too small");
    let (before, after) = frame.split_at(frame.len() - 3);
    format!("{before}{}{after}", "x".repeat(pad)).into_bytes()
}

/// Whether nexus has said something on `stream` (bytes, EOF or a reset) — never blocks.
fn answer_ready(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let ready =
        !matches!(stream.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    ready
}

/// Reads nexus's answer on `stream`.
fn read_answer(stream: &TcpStream) -> io::Result<Response> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let head = http::read_head(&mut reader)?
        .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "closed without an answer"))?;
    let mut parts = head.start_line.splitn(3, ' ');
    let _version = parts.next();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| http::invalid(format!("bad status line {:?}", head.start_line)))?;
    let reason = parts.next().unwrap_or("").to_string();
    let framing = Framing::of_response("POST", status, &head.headers)?;
    let body = http::read_body(&mut reader, framing)?;
    Ok(Response {
        status,
        reason,
        headers: head.headers,
        body,
    })
}

/// How writing a piece ended.
enum Wrote {
    All,
    /// Nexus said something (an answer, a close) before the piece was all taken.
    Answered,
    /// The test is over.
    Stopped,
    Failed(io::Error),
}

/// Writes all of `bytes`, waking every [`WRITE_SLICE`] to look for an answer or the end.
fn write_piece(stream: &mut TcpStream, bytes: &[u8], stop: &AtomicBool) -> Wrote {
    let mut off = 0;
    while off < bytes.len() {
        match stream.write(&bytes[off..]) {
            Ok(0) => return Wrote::Failed(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(SeqCst) {
                    return Wrote::Stopped;
                }
                if answer_ready(stream) {
                    return Wrote::Answered;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Wrote::Failed(e),
        }
    }
    Wrote::All
}

/// What the slow clients share with the test.
#[derive(Default)]
struct Load {
    /// Body bytes written by all clients.
    sent: AtomicU64,
    /// Clients answered with 503.
    refused: AtomicUsize,
    /// Clients that are answered, closed, or have sent their 3 MiB.
    settled: AtomicUsize,
    /// Set when the test is over (or failing): every client returns.
    stop: AtomicBool,
}

/// Sets [`Load::stop`] when dropped, so a failing test does not leave clients waiting.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// How one slow client's request ended.
#[derive(Debug)]
enum Ending {
    /// Nexus answered (with a body this incomplete, only a refusal can be right).
    Answered(Response),
    /// Nexus closed or reset the connection without a readable answer.
    Closed { sent: usize, error: String },
    /// Still sending, or all 3 MiB sent and waiting, when the test ended.
    Unanswered { sent: usize },
}

/// Declares 30 MiB, sends 3 MiB of it in 64 KiB pieces with pauses, then waits.
fn slow_client(addr: SocketAddr, load: &Load) -> Ending {
    let mut stream = TcpStream::connect(addr).expect("connecting to nexus");
    stream.set_nodelay(true).unwrap();
    stream.set_write_timeout(Some(WRITE_SLICE)).unwrap();
    let body = body_of_size(DECLARED);
    let mut sent = 0;
    let mut settled = false;
    let settle = |settled: &mut bool| {
        if !std::mem::replace(settled, true) {
            load.settled.fetch_add(1, SeqCst);
        }
    };
    let mut wrote = write_piece(&mut stream, head(addr, DECLARED).as_bytes(), &load.stop);
    while matches!(wrote, Wrote::All) && sent < SENT {
        if answer_ready(&stream) {
            wrote = Wrote::Answered;
            break;
        }
        wrote = write_piece(&mut stream, &body[sent..sent + PIECE], &load.stop);
        if matches!(wrote, Wrote::All) {
            sent += PIECE;
            load.sent.fetch_add(PIECE as u64, SeqCst);
            thread::sleep(PAUSE);
        }
    }
    if matches!(wrote, Wrote::All) {
        // All 3 MiB are out; nexus waits for the other 27. Nothing more will come unless
        // it refuses the body.
        settle(&mut settled);
        while !answer_ready(&stream) {
            if load.stop.load(SeqCst) {
                return Ending::Unanswered { sent };
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    if let Wrote::Stopped = wrote {
        return Ending::Unanswered { sent };
    }
    settle(&mut settled);
    match read_answer(&stream) {
        Ok(response) => {
            if response.status == 503 {
                load.refused.fetch_add(1, SeqCst);
            }
            Ending::Answered(response)
        }
        Err(e) => Ending::Closed {
            sent,
            error: match wrote {
                Wrote::Failed(w) => format!("write: {w}; read: {e}"),
                _ => format!("read: {e}"),
            },
        },
    }
}

/// The two tests run one at a time: 600 MB of slow bodies on a 2-core machine would
/// otherwise slow the small-budget test's transfers past its read timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn two_hundred_slow_30_mib_bodies_stay_within_the_default_budget() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut rig = Rig::plain(|_| MockReply::json(200, r#"{"ok":true}"#));
    let addr = rig.nexus.addr();
    let pid = rig.nexus.pid();
    let rss_before = rss_kib_of(pid);
    let load = Load::default();
    let sampling = AtomicBool::new(false);

    let (endings, normal, normal_took, peak_kib) = thread::scope(|s| {
        let _stop = StopOnDrop(&load.stop);
        let _stop_sampling = StopOnDrop(&sampling);
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !sampling.load(SeqCst) {
                peak = peak.max(rss_kib_of(pid));
                thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_kib_of(pid))
        });
        let load = &load;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| s.spawn(move || slow_client(addr, load)))
            .collect();

        // In flight: the budget is full (a refusal came) or could be (256 MiB are out).
        wait_for(LOAD_WAIT, "the slow bodies to fill the budget", || {
            (load.refused.load(SeqCst) > 0
                || load.sent.load(SeqCst) >= 256 * MIB as u64
                || load.settled.load(SeqCst) == CLIENTS)
                .then_some(())
        });
        let started = Instant::now();
        let normal = Client::connect(addr).try_request(&messages_request(
            r#"{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#,
        ));
        let normal_took = started.elapsed();
        let settled_then = load.settled.load(SeqCst);

        wait_for(
            LOAD_WAIT,
            "every slow client to be answered or to have sent its 3 MiB",
            || (load.settled.load(SeqCst) == CLIENTS).then_some(()),
        );
        sampling.store(true, SeqCst);
        let peak = sampler.join().unwrap();
        load.stop.store(true, SeqCst);
        let endings: Vec<Ending> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        eprintln!("the normal request went out with {settled_then} of {CLIENTS} clients settled");
        (endings, normal, normal_took, peak)
    });

    let answered: Vec<&Response> = endings
        .iter()
        .filter_map(|e| match e {
            Ending::Answered(r) => Some(r),
            _ => None,
        })
        .collect();
    let closed: Vec<&Ending> = endings
        .iter()
        .filter(|e| matches!(e, Ending::Closed { .. }))
        .collect();
    let waiting: Vec<usize> = endings
        .iter()
        .filter_map(|e| match e {
            Ending::Unanswered { sent } => Some(*sent),
            _ => None,
        })
        .collect();
    eprintln!(
        "RSS {rss_before} KiB before, peak {peak_kib} KiB; {} answered, {} closed, {} still \
         waiting ({} of them with all 3 MiB sent); {} MiB of bodies sent",
        answered.len(),
        closed.len(),
        waiting.len(),
        waiting.iter().filter(|&&sent| sent == SENT).count(),
        load.sent.load(SeqCst) >> 20
    );

    let normal = normal.expect("the normal request while the slow bodies were in flight");
    assert_eq!(normal.status, 200, "normal request: {}", normal.text());
    assert!(
        normal_took < NORMAL_BOUND,
        "the normal request took {normal_took:?} while the slow bodies were in flight"
    );
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "nexus's RSS reached {} MiB (bound {} MiB) with {CLIENTS} clients each holding up \
         to 3 MiB of a declared 30 MiB",
        peak_kib >> 10,
        RSS_BOUND_KIB >> 10
    );
    for response in &answered {
        assert_anthropic_error(response, 503, "api_error");
    }
    assert!(
        !answered.is_empty(),
        "600 MB of bodies against a 256 MiB budget, and no client was refused"
    );
    if let Some(Ending::Closed { sent, error }) = closed.first() {
        panic!(
            "{} clients saw their connection end without an answer, e.g. after {sent} body \
             bytes: {error}",
            closed.len()
        );
    }
    // Nothing incomplete was forwarded: the only request upstream is the normal one.
    let upstream = rig.mock.requests();
    assert_eq!(
        upstream.len(),
        1,
        "only the normal request may reach the upstream, got {} requests",
        upstream.len()
    );
    rig.nexus.assert_alive();
}

/// One request's body, sent in two parts by a thread, with its stream kept for reading.
struct Upload {
    stream: TcpStream,
    writer: thread::JoinHandle<io::Result<()>>,
}

impl Upload {
    /// Sends the head of a `total`-byte body and its first `first` bytes, in the background.
    fn start(addr: SocketAddr, body: &[u8], first: usize) -> Upload {
        let stream = TcpStream::connect(addr).expect("connecting to nexus");
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut bytes = head(addr, body.len()).into_bytes();
        bytes.extend_from_slice(&body[..first]);
        let writer = thread::spawn(move || out.write_all(&bytes));
        Upload { stream, writer }
    }
}

#[test]
fn over_a_small_budget_one_of_two_bodies_is_refused_and_the_budget_comes_back() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rig = Rig::start(
        Upstream::Plain,
        |r| MockReply::json(200, format!(r#"{{"got":{}}}"#, r.body.len())),
        |n| n.env("NEXUS_MAX_BUFFERED_MB", "8"),
    );
    let addr = rig.nexus.addr();
    let body = body_of_size(6 * MIB);
    let first = 5 * MIB;

    // 5 MiB of each 6 MiB body: 10 MiB against 8, and neither body is complete, so nexus
    // has nothing to answer but a refusal. Waiting for that answer (not a clock) tells us
    // both were in flight together.
    let uploads = [
        Upload::start(addr, &body, first),
        Upload::start(addr, &body, first),
    ];
    let refused_at = wait_for(
        Duration::from_secs(30),
        "a refusal: 10 MiB of two bodies sent against an 8 MiB budget",
        || uploads.iter().position(|u| answer_ready(&u.stream)),
    );
    let [a, b] = uploads;
    let (refused, survivor) = if refused_at == 0 { (a, b) } else { (b, a) };
    let refusal = read_answer(&refused.stream).expect("the refusal");
    assert_anthropic_error(&refusal, 503, "api_error");
    let _ = refused.writer.join(); // refused mid-body: its write may fail, as it should

    survivor
        .writer
        .join()
        .unwrap()
        .expect("the other body's first 5 MiB");
    (&survivor.stream)
        .write_all(&body[first..])
        .expect("the rest of the other body");
    let accepted = read_answer(&survivor.stream).expect("the other body's answer");
    assert_eq!(
        (accepted.status, accepted.text()),
        (200, format!(r#"{{"got":{}}}"#, body.len())),
        "the body that fit must be forwarded whole"
    );

    // That request is over and gave its share back: another 6 MiB fits.
    let third = rig.nexus.request(
        &Request::post("/v1/messages")
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body.clone()),
    );
    assert_eq!(
        (third.status, third.text()),
        (200, format!(r#"{{"got":{}}}"#, body.len())),
        "a body after the first finished must fit the budget again"
    );
    let upstream = rig.mock.requests();
    assert_eq!(
        upstream.len(),
        2,
        "the refused body must not reach the upstream"
    );
    for request in &upstream {
        assert_bytes_eq(&request.body, &body, "a forwarded 6 MiB body");
    }
}
