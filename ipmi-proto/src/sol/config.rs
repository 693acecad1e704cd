//! SOL configuration parameters (IPMI v2.0 ch. 26, Table 26-5), read with Get SOL
//! Configuration Parameters (0Ch/22h) and written with Set (0Ch/21h): what `ipmitool sol
//! info` prints and `ipmitool sol set` changes. Parameters 0–8 are kept; others are
//! answered 80h "parameter not supported".

use std::time::Duration;

use crate::codes::CompletionCode;
use crate::session::Privilege;

/// Parameter revision in every Get response (Table 26-4: "11h" for this version of the
/// parameters).
pub const REVISION: u8 = 0x11;

/// "Current channel" in a channel field (IPMI v2.0 §6.3).
const THIS_CHANNEL: u8 = 0x0e;

/// Set SOL Configuration Parameters: "set in progress" already held (Table 26-3, 81h).
const SET_IN_PROGRESS: CompletionCode = CompletionCode(0x81);
/// Set SOL Configuration Parameters: attempt to write a read-only parameter (Table 26-3, 82h).
const READ_ONLY: CompletionCode = CompletionCode(0x82);

/// The SOL parameters of one BMC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolConfig {
    /// Parameter 0: 0 set complete, 1 set in progress (a lock, §23.1 semantics).
    pub set_in_progress: u8,
    /// Parameter 1: SOL may be activated.
    pub enabled: bool,
    /// Parameter 2 b3:0: the least privilege that may activate SOL (IPMI v2.0 Appendix G
    /// lists Activate Payload at USER, subject to this parameter).
    pub min_privilege: Privilege,
    /// Parameter 3 byte 1: character accumulate interval, 5 ms units, 1..=255.
    pub accumulate_5ms: u8,
    /// Parameter 3 byte 2: character send threshold, 1..=255 characters.
    pub send_threshold: u8,
    /// Parameter 4 byte 1 b2:0: retries of an unacknowledged packet, 0..=7.
    pub retry_count: u8,
    /// Parameter 4 byte 2: retry interval, 10 ms units (0 = back to back).
    pub retry_interval_10ms: u8,
    /// Parameter 5: non-volatile bit rate (0 = the serial port's own setting, 6..=10).
    pub nv_bit_rate: u8,
    /// Parameter 6: volatile bit rate.
    pub volatile_bit_rate: u8,
    /// Parameter 7 (read-only): the channel SOL is carried on.
    pub channel: u8,
    /// Parameter 8 (read-only): the UDP port SOL is carried on (the BMC's own).
    pub port: u16,
}

impl SolConfig {
    /// The defaults: enabled; encryption and authentication always forced (every session
    /// here is encrypted, so that is what the BMC does in fact); activation from USER up;
    /// accumulate 100 ms with a threshold of 1 character and 7 retries 100 ms apart (OpenBMC's
    /// defaults, `sol/sol_manager.hpp`); 115,200 bit/s.
    pub fn new(channel: u8, port: u16) -> Self {
        Self {
            set_in_progress: 0,
            enabled: true,
            min_privilege: Privilege::User,
            accumulate_5ms: 20,
            send_threshold: 1,
            retry_count: 7,
            retry_interval_10ms: 10,
            nv_bit_rate: 0x0a,
            volatile_bit_rate: 0x0a,
            channel,
            port,
        }
    }

    /// How long output is held to gather more characters before it is sent.
    pub fn accumulate_interval(&self) -> Duration {
        Duration::from_millis(5 * u64::from(self.accumulate_5ms.max(1)))
    }

    /// How long an unacknowledged packet waits before it is sent again.
    pub fn retry_interval(&self) -> Duration {
        Duration::from_millis(10 * u64::from(self.retry_interval_10ms))
    }

    /// Parameter 2 as it is on the wire: b7 force encryption and b6 force authentication
    /// (both always set), b3:0 the minimum privilege.
    fn auth_byte(&self) -> u8 {
        0xc0 | self.min_privilege as u8
    }

    /// Answer Get SOL Configuration Parameters: `req` is the request data (byte 1 b7
    /// "revision only", b3:0 channel; byte 2 parameter; bytes 3–4 set and block selector).
    pub fn get(&self, req: &[u8]) -> Result<Vec<u8>, CompletionCode> {
        let [chan, param, _set, _block] = *req else {
            return Err(CompletionCode::BAD_LENGTH);
        };
        self.check_channel(chan)?;
        if chan & 0x80 != 0 {
            // Revision only (Table 26-4, byte 1 b7).
            return Ok(vec![REVISION]);
        }
        let mut out = vec![REVISION];
        match param {
            0 => out.push(self.set_in_progress),
            1 => out.push(u8::from(self.enabled)),
            2 => out.push(self.auth_byte()),
            3 => out.extend_from_slice(&[self.accumulate_5ms, self.send_threshold]),
            4 => out.extend_from_slice(&[self.retry_count, self.retry_interval_10ms]),
            5 => out.push(self.nv_bit_rate),
            6 => out.push(self.volatile_bit_rate),
            7 => out.push(self.channel),
            8 => out.extend_from_slice(&self.port.to_le_bytes()),
            _ => return Err(CompletionCode::PARAM_NOT_SUPPORTED),
        }
        Ok(out)
    }

    /// Apply Set SOL Configuration Parameters: `req` is byte 1 channel, byte 2 parameter,
    /// then the parameter's data. A value the BMC cannot honour is refused with CCh rather
    /// than stored and ignored; in particular encryption and authentication cannot be turned
    /// off, since no session here runs without them.
    pub fn set(&mut self, req: &[u8]) -> Result<(), CompletionCode> {
        let [chan, param, ref data @ ..] = *req else {
            return Err(CompletionCode::BAD_LENGTH);
        };
        self.check_channel(chan)?;
        let bad = Err(CompletionCode::INVALID_FIELD);
        match (param, data) {
            (0, &[v]) => match v & 0x03 {
                // 1 = set in progress; taking the lock while it is held is 81h.
                1 if self.set_in_progress == 1 => return Err(SET_IN_PROGRESS),
                1 => self.set_in_progress = 1,
                // 0 = set complete; 2 = commit write (nothing is staged, so it completes).
                0 | 2 => self.set_in_progress = 0,
                _ => return bad,
            },
            (1, &[v]) => self.enabled = v & 0x01 != 0,
            (2, &[v]) => {
                if v & 0xc0 != 0xc0 {
                    return bad;
                }
                match Privilege::from_u8(v & 0x0f) {
                    Some(p) if p >= Privilege::User => self.min_privilege = p,
                    _ => return bad,
                }
            }
            (3, &[interval, threshold]) => {
                if interval == 0 || threshold == 0 {
                    return bad; // both 1-based, 0 reserved (Table 26-5)
                }
                self.accumulate_5ms = interval;
                self.send_threshold = threshold;
            }
            (4, &[count, interval]) => {
                self.retry_count = count & 0x07;
                self.retry_interval_10ms = interval;
            }
            (5 | 6, &[v]) => {
                let v = v & 0x0f;
                if !matches!(v, 0 | 6..=10) {
                    return bad;
                }
                if param == 5 {
                    self.nv_bit_rate = v;
                } else {
                    self.volatile_bit_rate = v;
                }
            }
            (7 | 8, _) => return Err(READ_ONLY),
            (0..=6, _) => return Err(CompletionCode::BAD_LENGTH),
            _ => return Err(CompletionCode::PARAM_NOT_SUPPORTED),
        }
        Ok(())
    }

    fn check_channel(&self, chan: u8) -> Result<(), CompletionCode> {
        match chan & 0x0f {
            THIS_CHANNEL => Ok(()),
            c if c == self.channel => Ok(()),
            _ => Err(CompletionCode::INVALID_FIELD),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &SolConfig, param: u8) -> Result<Vec<u8>, CompletionCode> {
        c.get(&[0x0e, param, 0, 0])
    }

    #[test]
    fn ipmitool_sol_info_reads_parameters_0_to_8() {
        // ipmitool lib/ipmi_sol.c wants 2 data bytes (revision + 1) for 0,1,2,5,6,7 and 3
        // for 3, 4, 8.
        let c = SolConfig::new(1, 623);
        let lens: Vec<usize> = (0..=8).map(|p| get(&c, p).unwrap().len()).collect();
        assert_eq!(lens, [2, 2, 2, 3, 3, 2, 2, 2, 3]);
        assert_eq!(get(&c, 2).unwrap(), [0x11, 0xc2]);
        assert_eq!(get(&c, 8).unwrap(), [0x11, 0x6f, 0x02]);
        assert_eq!(get(&c, 9), Err(CompletionCode::PARAM_NOT_SUPPORTED));
        assert_eq!(c.get(&[0x8e, 1, 0, 0]).unwrap(), [0x11]);
        assert_eq!(c.get(&[0x05, 1, 0, 0]), Err(CompletionCode::INVALID_FIELD));
        assert_eq!(c.get(&[0x0e, 1, 0]), Err(CompletionCode::BAD_LENGTH));
    }

    #[test]
    fn ipmitool_sol_set_writes_what_it_may() {
        let mut c = SolConfig::new(1, 623);
        c.set(&[0x0e, 0, 1]).unwrap();
        assert_eq!(c.set(&[0x0e, 0, 1]), Err(SET_IN_PROGRESS));
        c.set(&[0x0e, 1, 0]).unwrap();
        c.set(&[0x0e, 2, 0xc3]).unwrap();
        c.set(&[0x0e, 3, 4, 10]).unwrap();
        c.set(&[0x0e, 4, 3, 50]).unwrap();
        c.set(&[0x0e, 6, 7]).unwrap();
        c.set(&[0x0e, 0, 0]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.min_privilege, Privilege::Operator);
        assert_eq!(c.accumulate_interval(), Duration::from_millis(20));
        assert_eq!((c.send_threshold, c.retry_count), (10, 3));
        assert_eq!(c.retry_interval(), Duration::from_millis(500));
        assert_eq!(c.volatile_bit_rate, 7);
        assert_eq!(c.set_in_progress, 0);
    }

    #[test]
    fn values_the_bmc_cannot_honour_are_refused() {
        let mut c = SolConfig::new(1, 623);
        let before = c.clone();
        // Turning encryption or authentication off: every session here is encrypted.
        assert_eq!(c.set(&[0x0e, 2, 0x42]), Err(CompletionCode::INVALID_FIELD));
        assert_eq!(c.set(&[0x0e, 2, 0x82]), Err(CompletionCode::INVALID_FIELD));
        assert_eq!(c.set(&[0x0e, 2, 0xc1]), Err(CompletionCode::INVALID_FIELD)); // callback
        assert_eq!(c.set(&[0x0e, 3, 0, 1]), Err(CompletionCode::INVALID_FIELD));
        assert_eq!(c.set(&[0x0e, 5, 3]), Err(CompletionCode::INVALID_FIELD));
        assert_eq!(c.set(&[0x0e, 7, 2]), Err(READ_ONLY));
        assert_eq!(c.set(&[0x0e, 8, 1, 2]), Err(READ_ONLY));
        assert_eq!(c.set(&[0x0e, 3, 1]), Err(CompletionCode::BAD_LENGTH));
        assert_eq!(
            c.set(&[0x0e, 42, 1]),
            Err(CompletionCode::PARAM_NOT_SUPPORTED)
        );
        assert_eq!(c.set(&[0x0e]), Err(CompletionCode::BAD_LENGTH));
        assert_eq!(c, before);
    }
}
