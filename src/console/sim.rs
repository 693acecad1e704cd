//! The simulator's serial console: a boot banner and a login prompt; input is echoed as a
//! terminal echoes it; each line is answered with `echo: LINE`; the line `burst N` answers
//! with N bytes of a fixed pattern (for throughput tests: byte k is
//! [`PATTERN`]`[k % 64]`, so a receiver can check that every byte arrived, in order).

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ConsoleLink, Input, LINK_DEPTH};

/// The burst pattern: 64 printable characters (nothing a terminal would interpret).
pub const PATTERN: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The most one `burst` line may ask for (64 MiB): a bound, not a feature.
pub const MAX_BURST: u64 = 64 << 20;

/// Output chunk size.
const CHUNK: usize = 4096;

/// The console as a pure state machine: feed it input, take its output in chunks.
#[derive(Debug)]
pub struct SimConsole {
    name: String,
    line: Vec<u8>,
    /// Output ready to go.
    pending: Vec<u8>,
    /// Pattern bytes still to produce for a burst, and the index of the next one.
    burst_left: u64,
    burst_at: u64,
    /// Whether the last line ended with CR, so a following LF is not a second line.
    after_cr: bool,
}

impl SimConsole {
    /// A console whose banner and prompt name `name`.
    pub fn new(name: &str) -> Self {
        let mut c = Self {
            name: name.to_owned(),
            line: Vec::new(),
            pending: Vec::new(),
            burst_left: 0,
            burst_at: 0,
            after_cr: false,
        };
        c.boot();
        c
    }

    /// What a machine prints when it starts: the banner and the first prompt.
    pub fn boot(&mut self) {
        self.line.clear();
        self.pending.extend_from_slice(
            format!("\r\novbmc simulated serial console ({})\r\n\r\n", self.name).as_bytes(),
        );
        self.prompt();
    }

    fn prompt(&mut self) {
        self.pending
            .extend_from_slice(format!("{} login: ", self.name).as_bytes());
    }

    /// Characters typed by the operator.
    pub fn input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => self.end_line(),
                // DEL and BS: erase the last character on screen as a tty does.
                0x7f | 0x08 => {
                    if self.line.pop().is_some() {
                        self.pending.extend_from_slice(b"\x08 \x08");
                    }
                }
                // Longer lines are cut, not grown without bound.
                _ if self.line.len() >= 1024 => {}
                _ => {
                    self.line.push(b);
                    self.pending.push(b);
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        self.pending.extend_from_slice(b"\r\n");
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().map(str::parse::<u64>),
            words.next(),
        ) {
            (Some("burst"), Some(Ok(n)), None) if n <= MAX_BURST => {
                self.burst_left = n;
                self.burst_at = 0;
            }
            (None, ..) => self.prompt(),
            _ => {
                self.pending
                    .extend_from_slice(format!("echo: {line}\r\n").as_bytes());
                self.prompt();
            }
        }
    }

    /// The next chunk of output (at most `max` bytes), if any.
    pub fn take_output(&mut self, max: usize) -> Option<Vec<u8>> {
        if self.pending.is_empty() && self.burst_left > 0 {
            let n = self.burst_left.min(max as u64);
            self.pending
                .extend((self.burst_at..self.burst_at + n).map(|k| PATTERN[(k % 64) as usize]));
            self.burst_at += n;
            self.burst_left -= n;
            if self.burst_left == 0 {
                self.pending.extend_from_slice(b"\r\n");
                self.prompt();
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(max);
        let rest = self.pending.split_off(n);
        Some(std::mem::replace(&mut self.pending, rest))
    }
}

/// Open the simulator's console for `name`: a task that runs a [`SimConsole`] until the link
/// is dropped.
pub fn open(name: &str) -> ConsoleLink {
    let (out_tx, from_guest) = mpsc::channel::<Bytes>(LINK_DEPTH);
    let (to_guest, mut in_rx) = mpsc::channel::<Input>(LINK_DEPTH);
    let mut sim = SimConsole::new(name);
    tokio::spawn(async move {
        loop {
            // Send everything there is before reading more input: `send` waits while the
            // BMC side is full, which is the backpressure.
            while let Some(chunk) = sim.take_output(CHUNK) {
                if out_tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            match in_rx.recv().await {
                Some(Input::Data(b)) => sim.input(&b),
                Some(Input::Break) => sim.boot(), // a break "reboots" the simulated guest
                None => return,
            }
        }
    });
    ConsoleLink {
        from_guest,
        to_guest,
        writable: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(c: &mut SimConsole) -> String {
        let mut s = Vec::new();
        while let Some(chunk) = c.take_output(7) {
            s.extend(chunk);
        }
        String::from_utf8(s).unwrap()
    }

    #[test]
    fn banner_prompt_echo_and_line_answer() {
        let mut c = SimConsole::new("node-0");
        assert!(all(&mut c).ends_with("node-0 login: "));
        c.input(b"root\r\n");
        assert_eq!(all(&mut c), "root\r\necho: root\r\nnode-0 login: ");
        c.input(b"ab\x7fc\n");
        assert_eq!(all(&mut c), "ab\x08 \x08c\r\necho: ac\r\nnode-0 login: ");
    }

    #[test]
    fn burst_sends_exactly_n_pattern_bytes_in_order() {
        let mut c = SimConsole::new("n");
        all(&mut c);
        c.input(b"burst 100000\r");
        let out = all(&mut c);
        let body = out.strip_prefix("burst 100000\r\n").unwrap();
        let body = body.strip_suffix("\r\nn login: ").unwrap().as_bytes();
        assert_eq!(body.len(), 100_000);
        assert!(body.iter().enumerate().all(|(k, &b)| b == PATTERN[k % 64]));
        c.input(b"burst 999999999999\r");
        assert!(all(&mut c).contains("echo: burst 999999999999"));
    }

    #[tokio::test]
    async fn the_link_carries_both_ways_and_ends_when_dropped() {
        let mut link = open("n");
        let banner = link.from_guest.recv().await.unwrap();
        assert!(banner.ends_with(b"n login: "));
        link.to_guest
            .send(Input::Data(Bytes::from_static(b"hi\r")))
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"n login: ") {
            got.extend(link.from_guest.recv().await.unwrap());
        }
        assert_eq!(got, b"hi\r\necho: hi\r\nn login: ");
        let ConsoleLink {
            to_guest,
            mut from_guest,
            ..
        } = link;
        drop(to_guest);
        assert!(from_guest.recv().await.is_none());
    }
}
