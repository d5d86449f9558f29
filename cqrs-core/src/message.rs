//! Messages: commands and events, their stable names, payloads and the type-erased
//! [`AnyMessage`] that buses carry.

use std::any::{Any, TypeId};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::codec::{Codec, CodecError, CodecOp};
use crate::error::{BoxError, Error};

/// A message type: a command or an event.
///
/// [`NAME`](Message::NAME) is what is stored, filtered on and logged. It must be stable and
/// unique within an application: never derive it from the Rust type path, which changes when
/// code moves.
pub trait Message: Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The stable name of this message type, e.g. `"OrderPlaced"`.
    const NAME: &'static str;

    /// The version of this type's schema. Bump it when the shape changes incompatibly and
    /// teach [`upcast`](Message::upcast) to migrate older payloads.
    const SCHEMA_VERSION: u32 = 1;

    /// Migrates a JSON payload written with an older schema version to the current one.
    ///
    /// The default refuses: a payload of another version is an error.
    ///
    /// # Errors
    /// When the old version cannot be migrated.
    fn upcast(from_version: u32, value: serde_json::Value) -> Result<serde_json::Value, BoxError> {
        let _ = value;
        Err(format!(
            "no upcaster from schema version {from_version} to {}",
            Self::SCHEMA_VERSION
        )
        .into())
    }
}

/// A command: one handler, imperative, carrying its own id.
pub trait Command: Message {
    /// The command's id; it becomes the envelope's message id.
    fn command_id(&self) -> Uuid;

    /// The session the command belongs to, if its handler must see the session's commands one
    /// at a time and in order.
    fn session_id(&self) -> Option<String> {
        None
    }
}

/// A message in serialized form: its name, schema version, codec and bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The message name ([`Message::NAME`]).
    pub name: String,
    /// The schema version the bytes were written with.
    pub schema_version: u32,
    /// The codec the bytes were written with.
    pub codec: Codec,
    /// The encoded message.
    pub bytes: Bytes,
}

impl Payload {
    /// Encodes a message.
    ///
    /// # Errors
    /// When the message cannot be represented with `codec`.
    pub fn encode<M: Message>(message: &M, codec: Codec) -> Result<Self, CodecError> {
        let bytes = codec
            .encode(message)
            .map_err(|e| CodecError::new(CodecOp::Encode, M::NAME, codec, e))?;
        Ok(Self {
            name: M::NAME.to_owned(),
            schema_version: M::SCHEMA_VERSION,
            codec,
            bytes: bytes.into(),
        })
    }

    /// Decodes the payload as an `M`, upcasting older JSON schema versions.
    ///
    /// # Errors
    /// [`Error::Codec`] when the name is not `M`'s, the bytes do not decode, or the schema
    /// version cannot be migrated.
    pub fn decode<M: Message>(&self) -> Result<M, Error> {
        let fail = |e: BoxError| Error::Codec(CodecError::new(CodecOp::Decode, &self.name, self.codec, e));
        if self.name != M::NAME {
            return Err(fail(format!("expected a `{}`", M::NAME).into()));
        }
        self.codec
            .decode_versioned(&self.bytes, self.schema_version, M::SCHEMA_VERSION, M::upcast)
            .map_err(fail)
    }
}

trait DynMessage: Any + Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn encode(&self, codec: Codec) -> Result<Payload, CodecError>;
    fn as_any(&self) -> &dyn Any;
}

impl<M: Message> DynMessage for M {
    fn name(&self) -> &'static str {
        M::NAME
    }
    fn encode(&self, codec: Codec) -> Result<Payload, CodecError> {
        Payload::encode(self, codec)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Clone)]
enum Repr {
    Typed(Arc<dyn DynMessage>),
    Raw(Arc<Payload>),
}

/// A message of any type, either typed (sent in this process) or raw (read from a store or a
/// transport). Cloning is cheap (one reference count).
#[derive(Clone)]
pub struct AnyMessage(Repr);

impl AnyMessage {
    /// Wraps a typed message.
    pub fn new<M: Message>(message: M) -> Self {
        Self(Repr::Typed(Arc::new(message)))
    }

    /// Wraps a serialized message.
    pub fn raw(payload: Payload) -> Self {
        Self(Repr::Raw(Arc::new(payload)))
    }

    /// The message name.
    pub fn name(&self) -> &str {
        match &self.0 {
            Repr::Typed(m) => m.name(),
            Repr::Raw(p) => &p.name,
        }
    }

    /// The Rust type of a typed message; `None` for a raw one.
    pub fn type_id(&self) -> Option<TypeId> {
        match &self.0 {
            Repr::Typed(m) => Some(m.as_any().type_id()),
            Repr::Raw(_) => None,
        }
    }

    /// The typed message, if this is a typed `M`.
    pub fn downcast_ref<M: Message>(&self) -> Option<&M> {
        match &self.0 {
            Repr::Typed(m) => m.as_any().downcast_ref(),
            Repr::Raw(_) => None,
        }
    }

    /// The serialized form, if this is a raw message.
    pub fn payload(&self) -> Option<&Payload> {
        match &self.0 {
            Repr::Typed(_) => None,
            Repr::Raw(p) => Some(p),
        }
    }

    /// The message as an `M`: borrowed when typed, decoded when raw.
    ///
    /// # Errors
    /// [`Error::Codec`] when a raw message does not decode as an `M`, or a typed one is another
    /// type.
    pub fn decode<M: Message>(&self) -> Result<Decoded<'_, M>, Error> {
        match &self.0 {
            Repr::Typed(m) => m.as_any().downcast_ref().map(Decoded::Borrowed).ok_or_else(|| {
                Error::Codec(CodecError::new(
                    CodecOp::Decode,
                    m.name(),
                    Codec::Json,
                    format!("expected a `{}`", M::NAME),
                ))
            }),
            Repr::Raw(p) => p.decode().map(Decoded::Owned),
        }
    }

    /// The serialized form: a raw message as it is, a typed one encoded with `codec`.
    ///
    /// # Errors
    /// When a typed message cannot be encoded.
    pub fn to_payload(&self, codec: Codec) -> Result<Payload, CodecError> {
        match &self.0 {
            Repr::Typed(m) => m.encode(codec),
            Repr::Raw(p) => Ok(Payload::clone(p)),
        }
    }
}

impl fmt::Debug for AnyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Typed(m) => m.fmt(f),
            Repr::Raw(p) => f
                .debug_struct("Raw")
                .field("name", &p.name)
                .field("schema_version", &p.schema_version)
                .field("codec", &p.codec)
                .field("len", &p.bytes.len())
                .finish(),
        }
    }
}

impl<M: Message> From<M> for AnyMessage {
    fn from(message: M) -> Self {
        Self::new(message)
    }
}

/// A message obtained from an [`AnyMessage`]: borrowed if it was typed, owned if it was decoded.
#[derive(Debug)]
pub enum Decoded<'a, M> {
    /// The typed message, without a copy.
    Borrowed(&'a M),
    /// The message decoded from its payload.
    Owned(M),
}

impl<M> Deref for Decoded<'_, M> {
    type Target = M;
    fn deref(&self) -> &M {
        match self {
            Self::Borrowed(m) => m,
            Self::Owned(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        full_name: String,
    }
    impl Message for Renamed {
        const NAME: &'static str = "Renamed";
        const SCHEMA_VERSION: u32 = 2;
        fn upcast(from: u32, mut v: serde_json::Value) -> Result<serde_json::Value, BoxError> {
            match from {
                1 => {
                    let name = v["name"].take();
                    Ok(serde_json::json!({ "full_name": name }))
                }
                _ => Err("unknown".into()),
            }
        }
    }

    #[test]
    fn typed_and_raw_decode_alike() {
        let typed = AnyMessage::new(Renamed {
            full_name: "Ada".into(),
        });
        assert_eq!(typed.name(), "Renamed");
        let raw = AnyMessage::raw(typed.to_payload(Codec::Json).unwrap());
        assert_eq!(raw.name(), "Renamed");
        assert_eq!(
            *raw.decode::<Renamed>().unwrap(),
            *typed.decode::<Renamed>().unwrap()
        );
        assert!(raw.downcast_ref::<Renamed>().is_none());
        assert!(typed.downcast_ref::<Renamed>().is_some());
    }

    #[test]
    fn old_schema_versions_are_upcast() {
        let old = Payload {
            name: "Renamed".into(),
            schema_version: 1,
            codec: Codec::Json,
            bytes: Bytes::from_static(br#"{"name":"Grace"}"#),
        };
        assert_eq!(old.decode::<Renamed>().unwrap().full_name, "Grace");
        let future = Payload {
            schema_version: 3,
            ..old.clone()
        };
        assert!(matches!(future.decode::<Renamed>(), Err(Error::Codec(_))));
        let garbage = Payload {
            schema_version: 2,
            bytes: Bytes::from_static(b"{oops"),
            ..old
        };
        assert!(matches!(garbage.decode::<Renamed>(), Err(Error::Codec(_))));
    }
}
