//! The lenient, borrowed shapes the [`Envelope`](super::Envelope) is read from: the few
//! fields of a JSON-RPC message the edge needs, each seen only for its shape, so values
//! it does not need are skipped without being built and a field of an unexpected type
//! never fails the whole message.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};

/// The top level of a JSON-RPC message, borrowed from the body.
#[derive(Deserialize)]
pub(super) struct Wire<'a> {
    #[serde(default, borrow)]
    pub(super) jsonrpc: Shape<'a>,
    #[serde(default, borrow)]
    pub(super) method: Shape<'a>,
    #[serde(default, borrow)]
    pub(super) id: Shape<'a>,
    #[serde(default, deserialize_with = "present")]
    pub(super) result: bool,
    #[serde(default, deserialize_with = "present")]
    pub(super) error: bool,
    #[serde(default, borrow, deserialize_with = "object_or_none")]
    pub(super) params: Option<Params<'a>>,
}

#[derive(Default, Deserialize)]
pub(super) struct Params<'a> {
    #[serde(default, borrow)]
    pub(super) name: Shape<'a>,
    #[serde(rename = "idempotencyKey", default, borrow)]
    pub(super) idempotency_key: Shape<'a>,
    #[serde(default, borrow, deserialize_with = "object_or_none")]
    pub(super) arguments: Option<Arguments<'a>>,
    #[serde(rename = "_meta", default, borrow, deserialize_with = "object_or_none")]
    pub(super) meta: Option<Meta<'a>>,
}

#[derive(Default, Deserialize)]
pub(super) struct Arguments<'a> {
    #[serde(default, borrow)]
    pub(super) session_id: Shape<'a>,
}

#[derive(Default, Deserialize)]
pub(super) struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", default, borrow)]
    pub(super) protocol_version: Shape<'a>,
    /// W3C trace context (read only while traces are exported).
    #[serde(default, borrow)]
    pub(super) traceparent: Shape<'a>,
    #[serde(default, borrow)]
    pub(super) tracestate: Shape<'a>,
    #[serde(default, borrow)]
    pub(super) baggage: Shape<'a>,
    /// Whether the client capabilities are ones rmcp accepts: only then does rmcp route
    /// the request statelessly (an object of the wrong shape, such as `{"roots": 5}`,
    /// leaves it in its transport session), so they are decoded as rmcp decodes them.
    /// The one value of a body the edge builds, bounded by `server.max_body_bytes`.
    #[serde(
        rename = "io.modelcontextprotocol/clientCapabilities",
        default,
        deserialize_with = "client_capabilities"
    )]
    pub(super) client_capabilities: bool,
}

/// `true` when the value decodes as rmcp's `ClientCapabilities` (as rmcp reads it from
/// a request's `_meta`: from the JSON value, a failure meaning "absent").
fn client_capabilities<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(rmcp::model::ClientCapabilities::deserialize(&value).is_ok())
}

/// A JSON value seen only for its shape: strings are kept (borrowed when unescaped),
/// everything else is consumed without being built.
#[derive(Debug, Default)]
pub(super) enum Shape<'a> {
    /// The field was not there.
    #[default]
    Absent,
    /// A string.
    Str(Cow<'a, str>),
    /// An integer that fits an `i64`.
    Int(i64),
    /// An object.
    Object,
    /// `null`, a number, a boolean or an array.
    Other,
}

impl Shape<'_> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Shape::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Shape<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Shape::Other)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Shape::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Shape::Other, Shape::Int))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Shape::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Shape::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shape::Object)
    }
}

/// `true` when the field is present, whatever its value.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// The object's fields when the value is an object; `None` (consumed) otherwise, so a
/// `params` of the wrong type is rmcp's to refuse with its own message.
fn object_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(ObjectOrNone(std::marker::PhantomData))
}

struct ObjectOrNone<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOrNone<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}
