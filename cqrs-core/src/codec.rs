//! Codecs: how payloads become bytes, and which codec a stored record was written with.
//!
//! Events default to JSON (readable, evolvable, queryable). Mementos default to bincode, a
//! compact binary format; they are disposable caches, so a memento that no longer decodes is
//! simply ignored. bincode is pinned (`=2.0.1`) and used only here, so it can be swapped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::BoxError;

/// A serialization format, stored beside every payload as its codec tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// `serde_json`. The default for events and commands.
    #[default]
    Json,
    /// bincode 2 (standard configuration, through serde). The default for mementos.
    Bincode,
}

impl Codec {
    /// The tag stored with each record: `"json"` or `"bincode"`.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Bincode => "bincode",
        }
    }

    /// Encodes a value.
    ///
    /// # Errors
    /// When the value cannot be represented in this format.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, BoxError> {
        match self {
            Self::Json => Ok(serde_json::to_vec(value)?),
            Self::Bincode => Ok(bincode::serde::encode_to_vec(value, bincode::config::standard())?),
        }
    }

    /// Decodes a value.
    ///
    /// # Errors
    /// When the bytes are not a valid `T` in this format (including trailing bytes).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, BoxError> {
        match self {
            Self::Json => Ok(serde_json::from_slice(bytes)?),
            Self::Bincode => {
                let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
                if read != bytes.len() {
                    return Err(format!("{} trailing bytes", bytes.len() - read).into());
                }
                Ok(value)
            }
        }
    }
}

/// Migrates a JSON value written with an older schema version to the current one.
pub type Upcast = fn(u32, serde_json::Value) -> Result<serde_json::Value, BoxError>;

impl Codec {
    /// Decodes bytes written with schema version `found` as a `T` of schema version `current`:
    /// directly when they agree, through `upcast` for an older JSON payload, and otherwise not.
    ///
    /// # Errors
    /// When the bytes do not decode, the version is newer than `current`, or an older version
    /// is not JSON or cannot be upcast.
    pub fn decode_versioned<T: DeserializeOwned>(
        self,
        bytes: &[u8],
        found: u32,
        current: u32,
        upcast: Upcast,
    ) -> Result<T, BoxError> {
        if found == current {
            return self.decode(bytes);
        }
        if self != Self::Json || found > current {
            return Err(format!("schema version {found} cannot be read as version {current}").into());
        }
        let old: serde_json::Value = serde_json::from_slice(bytes)?;
        Ok(serde_json::from_value(upcast(found, old)?)?)
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl FromStr for Codec {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "bincode" => Ok(Self::Bincode),
            other => Err(CodecError::new(
                CodecOp::Decode,
                other,
                Codec::Json,
                format!("unknown codec tag `{other}`"),
            )),
        }
    }
}

/// Whether a [`CodecError`] happened while encoding or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecOp {
    /// Turning a value into bytes.
    Encode,
    /// Turning bytes into a value.
    Decode,
}

/// A payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} `{name}` ({codec}): {source}")]
pub struct CodecError {
    /// Encoding or decoding.
    pub op: CodecOp,
    /// The message name, or what was being (de)serialized.
    pub name: String,
    /// The codec in use.
    pub codec: Codec,
    /// The underlying failure.
    #[source]
    pub source: BoxError,
}

impl CodecError {
    /// Builds a codec error.
    pub fn new(op: CodecOp, name: impl Into<String>, codec: Codec, source: impl Into<BoxError>) -> Self {
        Self {
            op,
            name: name.into(),
            codec,
            source: source.into(),
        }
    }
}

impl fmt::Display for CodecOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Encode => "encode",
            Self::Decode => "decode",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        seats: BTreeMap<u32, i32>,
        name: String,
    }

    #[test]
    fn both_codecs_round_trip() {
        let state = State {
            seats: [(1, 5), (2, -3)].into_iter().collect(),
            name: "x".into(),
        };
        for codec in [Codec::Json, Codec::Bincode] {
            let bytes = codec.encode(&state).unwrap();
            assert_eq!(codec.decode::<State>(&bytes).unwrap(), state);
            assert_eq!(codec.tag().parse::<Codec>().unwrap(), codec);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Codec::Json.decode::<State>(b"{").is_err());
        assert!(Codec::Bincode.decode::<State>(&[0xff; 3]).is_err());
        assert!("yaml".parse::<Codec>().is_err());
    }
}
