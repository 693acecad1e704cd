//! Wire values as newtypes that keep unknown values (the shape of rustls' `enum_builder!`):
//! a completion code, netFn, RMCP+ status, payload type or algorithm number is one byte with
//! named constants, printed by name when it has one and in hex when it does not. Nothing is
//! lost in decoding (an OEM or future value survives to the log line), and a log says
//! `NODE_BUSY` instead of `192`.

/// Defines a `u8` newtype with named constants, `name()`, `Debug`/`Display` by name (hex for
/// values without one), hex formatting, and conversions from and to `u8`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident;
        $( $(#[$cmeta:meta])* $konst:ident = $val:literal, )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u8);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($val); )*

            /// The constant's name, if this value has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($konst)), )*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!(stringify!($name), "({:#04x})"), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{:#04x}", self.0),
                }
            }
        }

        impl core::fmt::LowerHex for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl core::fmt::UpperHex for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::UpperHex::fmt(&self.0, f)
            }
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                Self(v)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.0
            }
        }

        /// Compare with a raw byte (`cc == 0` in tests and tools).
        impl PartialEq<u8> for $name {
            fn eq(&self, other: &u8) -> bool {
                self.0 == *other
            }
        }
    };
}

wire_enum! {
    /// An IPMI completion code (IPMI v2.0 §5.2, Table 5-2). The generic codes (00h, C0h–FFh)
    /// have names; the command-specific range 80h–BEh means something different for each
    /// command, so those constants (below) print in hex.
    pub struct CompletionCode;
    /// Command completed normally.
    OK = 0x00,
    /// Node busy: the command could not be processed now; clients retry.
    NODE_BUSY = 0xc0,
    /// Invalid or unsupported command.
    INVALID_COMMAND = 0xc1,
    /// Command invalid for the given LUN.
    INVALID_FOR_LUN = 0xc2,
    /// Timeout while processing the command.
    TIMEOUT = 0xc3,
    /// Out of space.
    OUT_OF_SPACE = 0xc4,
    /// Reservation cancelled or invalid reservation ID.
    INVALID_RESERVATION = 0xc5,
    /// Request data truncated.
    DATA_TRUNCATED = 0xc6,
    /// Request data length invalid.
    BAD_LENGTH = 0xc7,
    /// Request data field length limit exceeded.
    LENGTH_EXCEEDED = 0xc8,
    /// Parameter out of range.
    OUT_OF_RANGE = 0xc9,
    /// Cannot return the number of requested data bytes.
    CANNOT_RETURN = 0xca,
    /// Requested sensor, data or record not present.
    NOT_PRESENT = 0xcb,
    /// Invalid data field in request.
    INVALID_FIELD = 0xcc,
    /// Command illegal for the specified sensor or record type.
    ILLEGAL_FOR_TYPE = 0xcd,
    /// Command response could not be provided.
    NO_RESPONSE = 0xce,
    /// Cannot execute a duplicated request.
    DUPLICATED_REQUEST = 0xcf,
    /// SDR repository in update mode.
    SDR_UPDATING = 0xd0,
    /// Device in firmware update mode.
    FIRMWARE_UPDATING = 0xd1,
    /// BMC initialization in progress.
    INITIALIZING = 0xd2,
    /// Destination unavailable.
    DESTINATION_UNAVAILABLE = 0xd3,
    /// Insufficient privilege level.
    INSUFFICIENT_PRIVILEGE = 0xd4,
    /// Command not supported in present state.
    NOT_IN_PRESENT_STATE = 0xd5,
    /// Sub-function disabled or unavailable.
    UNAVAILABLE = 0xd6,
    /// Unspecified error.
    UNSPECIFIED = 0xff,
}

impl CompletionCode {
    /// Set/Get System Boot Options: parameter not supported (IPMI v2.0 Table 28-14).
    pub const PARAM_NOT_SUPPORTED: Self = Self(0x80);
    /// Set Session Privilege Level: requested level not available for this user (IPMI v2.0
    /// Table 22-24).
    pub const PRIV_NOT_AVAILABLE: Self = Self(0x80);
    /// Set Session Privilege Level: requested level exceeds the user or channel limit
    /// (IPMI v2.0 Table 22-24).
    pub const PRIV_EXCEEDS_LIMIT: Self = Self(0x81);
    /// Close Session: invalid session ID (IPMI v2.0 Table 22-25).
    pub const INVALID_SESSION_ID: Self = Self(0x87);
    /// Close Session: invalid session handle (IPMI v2.0 Table 22-25).
    pub const INVALID_SESSION_HANDLE: Self = Self(0x88);

    /// Is this 00h?
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

wire_enum! {
    /// A network function (IPMI v2.0 Table 5-1), 6 bits; even for requests, odd for responses.
    pub struct NetFn;
    /// Chassis request.
    CHASSIS = 0x00,
    /// Chassis response.
    CHASSIS_RESPONSE = 0x01,
    /// Bridge request.
    BRIDGE = 0x02,
    /// Sensor/Event request.
    SENSOR = 0x04,
    /// Application request.
    APP = 0x06,
    /// Application response.
    APP_RESPONSE = 0x07,
    /// Firmware request.
    FIRMWARE = 0x08,
    /// Storage request.
    STORAGE = 0x0a,
    /// Storage response.
    STORAGE_RESPONSE = 0x0b,
    /// Transport request.
    TRANSPORT = 0x0c,
    /// Transport response.
    TRANSPORT_RESPONSE = 0x0d,
    /// Group extension (PICMG, VITA, DCMI; the first data byte names the body).
    GROUP = 0x2c,
    /// Group extension response.
    GROUP_RESPONSE = 0x2d,
    /// OEM/group (IANA in the first three data bytes).
    OEM_GROUP = 0x2e,
}

impl NetFn {
    /// The response netFn for this request netFn (the odd one above it).
    pub fn response(self) -> Self {
        Self(self.0 | 1)
    }

    /// Is this a response netFn (odd)?
    pub fn is_response(self) -> bool {
        self.0 & 1 == 1
    }
}

wire_enum! {
    /// An RMCP+ / RAKP status code (IPMI v2.0 §13.24, Table 13-15).
    pub struct RakpStatus;
    /// No errors.
    OK = 0x00,
    /// Insufficient resources to create a session.
    NO_RESOURCES = 0x01,
    /// Invalid session ID.
    INVALID_SESSION_ID = 0x02,
    /// Invalid payload type.
    INVALID_PAYLOAD_TYPE = 0x03,
    /// Invalid authentication algorithm.
    INVALID_AUTH_ALGORITHM = 0x04,
    /// Invalid integrity algorithm.
    INVALID_INTEGRITY_ALGORITHM = 0x05,
    /// No matching authentication payload.
    NO_MATCHING_AUTH_PAYLOAD = 0x06,
    /// No matching integrity payload.
    NO_MATCHING_INTEGRITY_PAYLOAD = 0x07,
    /// Inactive session ID.
    INACTIVE_SESSION_ID = 0x08,
    /// Invalid role.
    INVALID_ROLE = 0x09,
    /// Unauthorized role or privilege level requested.
    UNAUTHORIZED_ROLE = 0x0a,
    /// Insufficient resources to create a session at the requested role.
    NO_RESOURCES_FOR_ROLE = 0x0b,
    /// Invalid name length.
    INVALID_NAME_LENGTH = 0x0c,
    /// Unauthorized name.
    UNAUTHORIZED_NAME = 0x0d,
    /// Unauthorized GUID.
    UNAUTHORIZED_GUID = 0x0e,
    /// Invalid integrity check value.
    INVALID_ICV = 0x0f,
    /// Invalid confidentiality algorithm.
    INVALID_CONFIDENTIALITY_ALGORITHM = 0x10,
    /// No cipher suite match with proposed security algorithms.
    NO_CIPHER_MATCH = 0x11,
    /// Illegal or unrecognized parameter.
    ILLEGAL_PARAMETER = 0x12,
}

impl RakpStatus {
    /// Is this 00h?
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

wire_enum! {
    /// An RMCP+ payload type (IPMI v2.0 Table 13-16): bits 5:0 of the payload type byte.
    pub struct PayloadType;
    /// An IPMI message.
    IPMI = 0x00,
    /// Serial over LAN.
    SOL = 0x01,
    /// OEM explicit (carries an OEM IANA and payload ID).
    OEM_EXPLICIT = 0x02,
    /// RMCP+ Open Session Request.
    OPEN_SESSION_REQUEST = 0x10,
    /// RMCP+ Open Session Response.
    OPEN_SESSION_RESPONSE = 0x11,
    /// RAKP Message 1.
    RAKP1 = 0x12,
    /// RAKP Message 2.
    RAKP2 = 0x13,
    /// RAKP Message 3.
    RAKP3 = 0x14,
    /// RAKP Message 4.
    RAKP4 = 0x15,
}

wire_enum! {
    /// An authentication algorithm number (IPMI v2.0 Table 13-17), bits 5:0.
    pub struct AuthAlg;
    /// RAKP-none (cipher suite 0): refused.
    RAKP_NONE = 0x00,
    /// RAKP-HMAC-SHA1.
    RAKP_HMAC_SHA1 = 0x01,
    /// RAKP-HMAC-MD5.
    RAKP_HMAC_MD5 = 0x02,
    /// RAKP-HMAC-SHA256.
    RAKP_HMAC_SHA256 = 0x03,
}

wire_enum! {
    /// An integrity algorithm number (IPMI v2.0 Table 13-18), bits 5:0.
    pub struct IntegAlg;
    /// None.
    NONE = 0x00,
    /// HMAC-SHA1-96.
    HMAC_SHA1_96 = 0x01,
    /// HMAC-MD5-128.
    HMAC_MD5_128 = 0x02,
    /// MD5-128.
    MD5_128 = 0x03,
    /// HMAC-SHA256-128.
    HMAC_SHA256_128 = 0x04,
}

wire_enum! {
    /// A confidentiality algorithm number (IPMI v2.0 Table 13-19), bits 5:0.
    pub struct ConfAlg;
    /// None.
    NONE = 0x00,
    /// AES-CBC-128.
    AES_CBC_128 = 0x01,
    /// xRC4-128.
    XRC4_128 = 0x02,
    /// xRC4-40.
    XRC4_40 = 0x03,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_print_by_name_and_unknown_ones_in_hex() {
        assert_eq!(format!("{:?}", CompletionCode(0xc0)), "NODE_BUSY");
        assert_eq!(CompletionCode::NODE_BUSY.to_string(), "NODE_BUSY");
        assert_eq!(
            format!("{:?}", CompletionCode(0x42)),
            "CompletionCode(0x42)"
        );
        assert_eq!(CompletionCode(0x42).to_string(), "0x42");
        // Command-specific codes mean different things per command: hex, not a name.
        assert_eq!(CompletionCode::PRIV_EXCEEDS_LIMIT.to_string(), "0x81");
        assert_eq!(format!("{:?}", RakpStatus(0x11)), "NO_CIPHER_MATCH");
        assert_eq!(format!("{:?}", PayloadType(0x3f)), "PayloadType(0x3f)");
        assert_eq!(format!("{:#04x}", NetFn::APP), "0x06");
        assert_eq!(NetFn::CHASSIS.response(), NetFn::CHASSIS_RESPONSE);
        assert!(CompletionCode(0) == 0 && u8::from(RakpStatus::INVALID_ICV) == 0x0f);
    }
}
