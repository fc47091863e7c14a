//! Child processes for tests: killed and reaped on drop, output captured in the background.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Owns a child process; kills and waits for it when dropped, so no test leaks one.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child }
    }

    /// The underlying child (for taking its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running then.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text a child wrote on stdout and stderr, interleaved in arrival order per line.
#[derive(Clone, Debug, Default)]
pub struct OutputLog {
    text: Arc<Mutex<String>>,
}

impl OutputLog {
    /// Everything captured so far.
    pub fn snapshot(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Only the lines a given stream wrote (`"stdout"` or `"stderr"`), without prefixes.
    pub fn stream(&self, which: &str) -> String {
        let prefix = format!("[{which}] ");
        self.snapshot()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn append(&self, which: &str, line: &str) {
        let mut text = self.text.lock().unwrap();
        text.push_str(&format!("[{which}] {line}\n"));
    }

    /// Drains `pipe` line by line into the log on a background thread. Each line is also sent
    /// on the returned channel (the receiver may be dropped); the channel closes at EOF.
    pub fn drain<R: Read + Send + 'static>(
        &self,
        which: &'static str,
        pipe: R,
    ) -> (Receiver<String>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let log = self.clone();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        log.append(which, &line);
                        let _ = tx.send(line);
                    }
                }
            }
        });
        (rx, handle)
    }
}
