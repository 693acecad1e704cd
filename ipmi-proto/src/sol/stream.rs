//! One active SOL instance, BMC side, as a sans-I/O state machine: the characters flowing
//! each way, sequence numbers, acknowledgements and retransmits (IPMI v2.0 §15.9–15.11).
//!
//! The caller (the endpoint) feeds it decrypted SOL packets from the console with
//! [`SolStream::receive`] and the system's console output with [`SolStream::push`], and
//! takes SOL payloads to seal and send from [`SolStream::poll_transmit`] until it answers
//! `None`, then sleeps until [`SolStream::poll_timeout`]. Time is passed in.
//!
//! Flow: one data packet in flight at a time (stop and wait, as §15.11 describes and every
//! client expects); an unacknowledged packet is sent again with the same sequence number
//! after the retry interval, up to the retry count; a partial acknowledgement puts the rest
//! back at the front of the queue, to go in a new packet. Acknowledgements go in their own
//! ack-only packets (sequence 0), as ipmi_sim sends them and every client reads them.
//! Backpressure instead of loss: the system side may only push as much as
//! [`SolStream::room`] allows, and console input is accepted only as far as the caller says
//! the system side has room; the rest is NACKed and the console sends it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::SolConfig;
use super::packet::{MAX_DATA, Operation, SolPacket, Status, next_seq};

/// Timing and size rules of one stream, from the SOL parameters at activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Character accumulate interval (parameter 3).
    pub accumulate: Duration,
    /// Character send threshold (parameter 3).
    pub threshold: usize,
    /// Retries of an unacknowledged packet (parameter 4).
    pub retries: u8,
    /// Time between tries (parameter 4).
    pub retry_interval: Duration,
    /// Most characters per packet the BMC sends (≤ 255, and what the console can take).
    pub max_data: usize,
    /// Most system output buffered before [`SolStream::room`] says 0.
    pub capacity: usize,
}

impl Timing {
    /// The timing `cfg` sets, with `capacity` bytes of output buffer.
    pub fn from_config(cfg: &SolConfig, capacity: usize) -> Self {
        Self {
            accumulate: cfg.accumulate_interval(),
            threshold: usize::from(cfg.send_threshold.max(1)),
            retries: cfg.retry_count,
            // A retry interval of 0 ("back to back", Table 26-5) would spin against a
            // console that is merely slow; 10 ms is the parameter's own unit.
            retry_interval: cfg.retry_interval().max(Duration::from_millis(10)),
            max_data: MAX_DATA,
            capacity: capacity.max(MAX_DATA),
        }
    }
}

/// What a received packet asks of the system side.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inbound<'a> {
    /// New characters for the system's serial input (never a repeat of a retransmit).
    pub data: &'a [u8],
    /// Send a serial break (Operation b4).
    pub brk: bool,
    /// Discard input not yet written to the system (Operation b1).
    pub flush_inbound: bool,
}

/// Counters of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SolStats {
    /// Characters sent to the console (first sends only; acknowledged or not).
    pub bytes_out: u64,
    /// Characters taken from the console and handed to the system.
    pub bytes_in: u64,
    /// Packets sent again after their retry interval.
    pub retransmits: u64,
    /// Characters given up on after the last retry went unanswered.
    pub abandoned: u64,
    /// Console packets NACKed because the system side had no room.
    pub nacks_sent: u64,
}

#[derive(Debug)]
struct InFlight {
    seq: u8,
    data: Vec<u8>,
    sent: Instant,
    tries: u8,
}

/// An acknowledgement owed to the console.
#[derive(Clone, Copy, Debug)]
struct Ack {
    seq: u8,
    accepted: u8,
    nack: bool,
}

/// One active SOL instance (see the module documentation).
#[derive(Debug)]
pub struct SolStream {
    timing: Timing,
    out: VecDeque<u8>,
    /// When the oldest byte now in `out` arrived (the accumulate timer).
    out_since: Option<Instant>,
    in_flight: Option<InFlight>,
    last_seq: u8,
    /// (sequence, accepted, length) of the console's last data packet, to recognise a
    /// retransmit and answer it with the same acknowledgement.
    last_rx: Option<(u8, u8, usize)>,
    ack_due: Option<Ack>,
    /// The console deasserted CTS: the system must hold its output.
    held: bool,
    stats: SolStats,
}

impl SolStream {
    /// A stream with nothing sent or received yet.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            out: VecDeque::new(),
            out_since: None,
            in_flight: None,
            last_seq: 0,
            last_rx: None,
            ack_due: None,
            held: false,
            stats: SolStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> SolStats {
        self.stats
    }

    /// How many more bytes of system output may be pushed now (0 while the console holds
    /// CTS deasserted or the buffer is full): the backend reads no more than this.
    pub fn room(&self) -> usize {
        if self.held {
            return 0;
        }
        self.timing.capacity.saturating_sub(self.out.len())
    }

    /// Characters not yet acknowledged by the console (queued or in flight).
    pub fn unacknowledged(&self) -> usize {
        self.out.len() + self.in_flight.as_ref().map_or(0, |f| f.data.len())
    }

    /// Queue system output; returns how many bytes were taken (at most [`Self::room`]).
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> usize {
        let n = bytes.len().min(self.room());
        if n > 0 && self.out.is_empty() {
            self.out_since = Some(now);
        }
        self.out.extend(&bytes[..n]);
        n
    }

    /// Take a packet from the console. `room` is how many characters the system side can
    /// take now; more than that is left unaccepted (partial ack), none at all is a NACK.
    pub fn receive<'a>(&mut self, pkt: &SolPacket<'a>, room: usize, now: Instant) -> Inbound<'a> {
        let op = Operation(pkt.ctrl);
        self.take_ack(pkt, op, now);
        self.held = op.has(Operation::DEASSERT_CTS);
        if op.has(Operation::FLUSH_OUTBOUND) {
            self.out.clear();
            self.out_since = None;
        }
        let mut inbound = Inbound {
            data: &[],
            brk: false,
            flush_inbound: op.has(Operation::FLUSH_INBOUND),
        };
        if pkt.seq == 0 {
            // Ack-only: never acknowledged itself (Table 15-2), and never sent twice, so a
            // break in it is delivered as it is (ipmitool's `~B` may come this way).
            inbound.brk = op.has(Operation::BREAK);
            return inbound;
        }
        if let Some((seq, accepted, len)) = self.last_rx
            && seq == pkt.seq
            && len == pkt.data.len()
        {
            // The console did not see our ack and sent the packet again: ack it again,
            // deliver nothing twice.
            self.ack_due = Some(Ack {
                seq,
                accepted,
                nack: false,
            });
            return inbound;
        }
        let n = pkt.data.len().min(room);
        if n == 0 && !pkt.data.is_empty() {
            self.ack_due = Some(Ack {
                seq: pkt.seq,
                accepted: 0,
                nack: true,
            });
            self.stats.nacks_sent += 1;
            return inbound;
        }
        let accepted = n as u8; // ≤ 255: SolPacket::read bounds the data
        self.last_rx = Some((pkt.seq, accepted, pkt.data.len()));
        self.ack_due = Some(Ack {
            seq: pkt.seq,
            accepted,
            nack: false,
        });
        self.stats.bytes_in += n as u64;
        inbound.data = &pkt.data[..n];
        inbound.brk = op.has(Operation::BREAK);
        inbound
    }

    /// The acknowledgement fields of a console packet, for our packet in flight.
    fn take_ack(&mut self, pkt: &SolPacket<'_>, op: Operation, now: Instant) {
        let Some(f) = self.in_flight.as_mut() else {
            return;
        };
        if pkt.ack_seq == 0 || pkt.ack_seq != f.seq {
            return; // nothing acknowledged, or a stale acknowledgement
        }
        if op.has(Operation::NACK) {
            // The console cannot take it now: try again after the interval without
            // spending a retry (it answered, so it is there).
            f.sent = now;
            return;
        }
        let f = self.in_flight.take().expect("checked above");
        let accepted = usize::from(pkt.accepted).min(f.data.len());
        if accepted < f.data.len() {
            // Partial ack: the rest goes first, in a new packet with a new sequence number.
            for &b in f.data[accepted..].iter().rev() {
                self.out.push_front(b);
            }
            self.out_since.get_or_insert(now);
        }
    }

    /// The next SOL payload to send, if one is due at `now`: a retransmit, then an
    /// acknowledgement, then new data. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(f) = self.in_flight.as_mut()
            && now >= f.sent + self.timing.retry_interval
        {
            if f.tries < self.timing.retries {
                f.tries += 1;
                f.sent = now;
                self.stats.retransmits += 1;
                let p = SolPacket {
                    seq: f.seq,
                    ack_seq: 0,
                    accepted: 0,
                    ctrl: 0,
                    data: &f.data,
                };
                return Some(p.to_vec());
            }
            // Retries spent (§15.11): the console is gone or deaf; move on rather than stall.
            let f = self.in_flight.take().expect("checked above");
            self.stats.abandoned += f.data.len() as u64;
        }
        if let Some(a) = self.ack_due.take() {
            let ctrl = if a.nack {
                Status::NACK | Status::TRANSFER_UNAVAILABLE
            } else {
                0
            };
            let p = SolPacket {
                seq: 0,
                ack_seq: a.seq,
                accepted: a.accepted,
                ctrl,
                data: &[],
            };
            return Some(p.to_vec());
        }
        if self.in_flight.is_none() && self.data_due(now) {
            let n = self.out.len().min(self.timing.max_data);
            let data: Vec<u8> = self.out.drain(..n).collect();
            self.out_since = if self.out.is_empty() { None } else { Some(now) };
            self.last_seq = next_seq(self.last_seq);
            self.stats.bytes_out += n as u64;
            let p = SolPacket {
                seq: self.last_seq,
                ack_seq: 0,
                accepted: 0,
                ctrl: 0,
                data: &data,
            };
            let bytes = p.to_vec();
            self.in_flight = Some(InFlight {
                seq: self.last_seq,
                data,
                sent: now,
                tries: 0,
            });
            return Some(bytes);
        }
        None
    }

    fn data_due(&self, now: Instant) -> bool {
        match self.out_since {
            None => false,
            Some(since) => {
                self.out.len() >= self.timing.threshold.min(self.timing.max_data)
                    || now >= since + self.timing.accumulate
            }
        }
    }

    /// When [`Self::poll_transmit`] next has something to send (if nothing arrives first).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(f) = &self.in_flight {
            return Some(f.sent + self.timing.retry_interval);
        }
        self.out_since.map(|since| since + self.timing.accumulate)
    }

    /// The last packet the BMC sends when it ends the instance (Deactivate Payload from
    /// another session, the system side gone, Cold Reset): ack-only, with "SOL
    /// deactivating" set (Table 15-2, status b4), so the console knows it is over.
    pub fn deactivating_packet(&self) -> Vec<u8> {
        SolPacket {
            seq: 0,
            ack_seq: 0,
            accepted: 0,
            ctrl: Status::DEACTIVATING,
            data: &[],
        }
        .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (SolStream, Instant) {
        let t = Timing::from_config(&SolConfig::new(1, 623), 1024);
        (SolStream::new(t), Instant::now())
    }

    fn pkt(bytes: &[u8]) -> SolPacket<'_> {
        SolPacket::read(bytes).unwrap()
    }

    fn drain(s: &mut SolStream, now: Instant) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| s.poll_transmit(now)).collect()
    }

    #[test]
    fn output_goes_out_at_once_with_a_threshold_of_one_and_waits_for_its_ack() {
        let (mut s, t0) = stream();
        assert_eq!(s.push(b"login: ", t0), 7);
        assert_eq!(drain(&mut s, t0), [b"\x01\x00\x00\x00login: ".to_vec()]);
        s.push(b"more", t0);
        assert!(
            drain(&mut s, t0).is_empty(),
            "one data packet in flight at a time"
        );
        s.receive(&pkt(&[0, 1, 7, 0]), 0, t0);
        assert_eq!(drain(&mut s, t0), [b"\x02\x00\x00\x00more".to_vec()]);
        assert_eq!(s.stats().bytes_out, 11);
    }

    #[test]
    fn a_partial_ack_resends_the_rest_in_a_new_packet() {
        let (mut s, t0) = stream();
        s.push(b"abcdef", t0);
        drain(&mut s, t0);
        s.receive(&pkt(&[0, 1, 2, 0]), 0, t0);
        assert_eq!(drain(&mut s, t0), [b"\x02\x00\x00\x00cdef".to_vec()]);
    }

    #[test]
    fn an_unacknowledged_packet_is_retried_with_the_same_seq_then_given_up() {
        let (mut s, t0) = stream(); // 7 retries, 100 ms apart
        s.push(b"x", t0);
        drain(&mut s, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        assert!(drain(&mut s, t0 + Duration::from_millis(99)).is_empty());
        let mut t = t0;
        for _ in 0..7 {
            t += Duration::from_millis(100);
            assert_eq!(drain(&mut s, t), [b"\x01\x00\x00\x00x".to_vec()]);
        }
        s.push(b"y", t);
        t += Duration::from_millis(100);
        assert_eq!(drain(&mut s, t), [b"\x02\x00\x00\x00y".to_vec()]);
        assert_eq!((s.stats().retransmits, s.stats().abandoned), (7, 1));
    }

    #[test]
    fn console_data_is_acked_once_and_a_retransmit_is_not_delivered_twice() {
        let (mut s, t0) = stream();
        let p = [1, 0, 0, 0, b'h', b'i', b'\r'];
        assert_eq!(s.receive(&pkt(&p), 100, t0).data, b"hi\r");
        assert_eq!(drain(&mut s, t0), [vec![0, 1, 3, 0]]);
        assert_eq!(s.receive(&pkt(&p), 100, t0).data, b"");
        assert_eq!(drain(&mut s, t0), [vec![0, 1, 3, 0]]);
        assert_eq!(s.receive(&pkt(&[2, 0, 0, 0, b'\r']), 100, t0).data, b"\r");
        assert_eq!(s.stats().bytes_in, 4);
    }

    #[test]
    fn no_room_on_the_system_side_is_a_nack_and_little_room_a_partial_ack() {
        let (mut s, t0) = stream();
        let p = [1, 0, 0, 0, b'a', b'b', b'c'];
        assert_eq!(s.receive(&pkt(&p), 0, t0).data, b"");
        assert_eq!(
            drain(&mut s, t0),
            [vec![0, 1, 0, Status::NACK | Status::TRANSFER_UNAVAILABLE]]
        );
        // The console sends it again, same seq: now there is room for two.
        assert_eq!(s.receive(&pkt(&p), 2, t0).data, b"ab");
        assert_eq!(drain(&mut s, t0), [vec![0, 1, 2, 0]]);
    }

    #[test]
    fn output_is_bounded_and_cts_from_the_console_holds_it() {
        let (mut s, t0) = stream();
        let big = vec![b'z'; 5000];
        assert_eq!(s.push(&big, t0), 1024);
        assert_eq!(s.room(), 0);
        let first = drain(&mut s, t0);
        assert_eq!(first[0].len(), 4 + 255);
        s.receive(&pkt(&[0, 1, 255, Operation::DEASSERT_CTS]), 0, t0);
        assert_eq!(s.room(), 0, "held while CTS is deasserted");
        s.receive(&pkt(&[0, 0, 0, 0]), 0, t0);
        assert_eq!(s.room(), 255);
        assert_eq!(s.unacknowledged(), 1024 - 255);
    }

    #[test]
    fn a_console_nack_delays_without_spending_a_retry() {
        let (mut s, t0) = stream();
        s.push(b"q", t0);
        drain(&mut s, t0);
        let t1 = t0 + Duration::from_millis(50);
        s.receive(&pkt(&[0, 1, 0, Operation::NACK]), 0, t1);
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_millis(100)));
        assert_eq!(s.stats().retransmits, 0);
    }

    #[test]
    fn accumulate_interval_gathers_characters_below_the_threshold() {
        let mut cfg = SolConfig::new(1, 623);
        cfg.send_threshold = 10;
        cfg.accumulate_5ms = 4; // 20 ms
        let mut s = SolStream::new(Timing::from_config(&cfg, 1024));
        let t0 = Instant::now();
        s.push(b"abc", t0);
        assert!(drain(&mut s, t0).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(drain(&mut s, t0 + Duration::from_millis(20)).len(), 1);
    }

    #[test]
    fn break_and_flush_reach_the_caller() {
        let (mut s, t0) = stream();
        s.push(b"pending", t0);
        let i = s.receive(
            &pkt(&[1, 0, 0, Operation::BREAK | Operation::FLUSH_OUTBOUND]),
            10,
            t0,
        );
        assert!(i.brk && !i.flush_inbound);
        assert_eq!(
            drain(&mut s, t0),
            [vec![0, 1, 0, 0]],
            "flushed output is not sent"
        );
        assert_eq!(s.deactivating_packet(), [0, 0, 0, Status::DEACTIVATING]);
    }
}
