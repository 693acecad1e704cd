//! Sans-I/O IPMI 2.0 / RMCP+ for a BMC.
#![forbid(unsafe_code)]

pub mod machine;
