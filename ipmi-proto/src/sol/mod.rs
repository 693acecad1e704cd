//! Serial over LAN (payload type 01h; IPMI v2.0 ch. 15, 24, 26) as pure pieces, no I/O:
//!
//! * [`packet`]: the SOL payload and the payload commands' request and response bodies,
//!   one parser and one encoder each;
//! * [`config`]: the SOL configuration parameters (Get/Set SOL Configuration Parameters);
//! * [`stream`]: one active SOL instance, BMC side — sequence numbers, acknowledgements,
//!   retransmits, accumulate interval, backpressure — driven by the caller's clock;
//! * [`instance`]: the BMC's one instance (instance 1): who owns it, the payload commands
//!   that activate and end it, the console input held for the runtime, the counters.
//!
//! The endpoint owns one instance per BMC and moves characters between a [`stream::SolStream`]
//! and the console backend (`endpoint/sol.rs`); see docs/console.md.

pub mod config;
pub mod instance;
pub mod packet;
pub mod stream;

pub use config::SolConfig;
pub use instance::{SolInput, SolTotals};
pub use packet::SolPacket;
pub use stream::{SolStream, Timing};
