//! A JSON string that is only a string. poem-openapi's `String` also accepts numbers and
//! booleans (turning `312` into `"312"`); partner protocols here say "string", and a
//! number where a string belongs is a client error worth reporting.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString(pub String);

impl JsonString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Type for JsonString {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for JsonString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for JsonString {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// Reads a request body the way a route's `Json<T>` payload does (an empty body is
/// `null`): for pure entry points that take bytes, such as the fuzz targets'.
pub fn parse_body<T: ParseFromJSON>(data: &[u8]) -> Option<T> {
    let value = if data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(data).ok()?
    };
    T::parse_from_json(Some(value)).ok()
}

/// Whether Postgres can store `value` as `jsonb` and its strings as `text`: no string or
/// key holds U+0000.
pub fn storable(value: &Value) -> bool {
    match value {
        Value::String(text) => !text.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && storable(v)),
        _ => true,
    }
}
