//! JSON to postcard and back, driven by a schema a server published (discovery), so
//! `wirecall call --json` can call a typed endpoint with no Rust types at hand: what
//! grpcurl does with server reflection.
//!
//! The JSON shapes are serde_json's for the same Rust types: structs are objects, tuples
//! and sequences arrays, `Option` is `null` or the value, unit is `null`, enum variants are
//! `"Name"`, `{"Name": value}`, `{"Name": [..]}` or `{"Name": {..}}`, maps with string keys
//! are objects (others arrays of `[key, value]` pairs). Byte strings (`&[u8]`, `Vec<u8>`)
//! are read from a JSON string (its UTF-8 bytes) or an array of numbers, and shown as a
//! string when they are text (UTF-8 without control characters), else as an array. Every error names where in the value it is (`field a.b`,
//! `item 2`).

use std::fmt;

use serde_json::{Map, Number, Value};
use wirecall::typed::postcard_schema::schema::owned::{
    OwnedDataModelType as Ty, OwnedDataModelVariant as Variant, OwnedNamedType, OwnedNamedValue,
};

/// Nesting deeper than this is refused (a hostile schema or input cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

/// Where in a value something went wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    /// The path to the value: `""` for the top, `a.b`, `a[2]`, `Some.x`.
    pub(crate) at: String,
    /// What is wrong there.
    pub(crate) message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.at, self.message)
        }
    }
}

impl std::error::Error for JsonError {}

fn err(at: &str, message: impl Into<String>) -> JsonError {
    JsonError {
        at: at.to_owned(),
        message: message.into(),
    }
}

fn field(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

fn item(at: &str, i: usize) -> String {
    format!("{at}[{i}]")
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Encodes `value` as the postcard bytes of a value of `schema`.
///
/// # Errors
///
/// [`JsonError`] naming the part of `value` that does not fit the schema.
pub(crate) fn encode(schema: &OwnedNamedType, value: &Value) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::new();
    Encoder { out: &mut out }.value(&schema.ty, value, "", 0)?;
    Ok(out)
}

struct Encoder<'o> {
    out: &'o mut Vec<u8>,
}

impl Encoder<'_> {
    fn varint(&mut self, mut v: u128) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.out.push(byte);
                return;
            }
            self.out.push(byte | 0x80);
        }
    }

    fn zigzag(&mut self, v: i128) {
        self.varint(((v << 1) ^ (v >> 127)) as u128);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u128);
        self.out.extend_from_slice(b);
    }

    fn unsigned(&mut self, v: &Value, at: &str, max: u128, name: &str) -> Result<u128, JsonError> {
        let n = match v {
            Value::Number(n) => n.as_u64().map(u128::from),
            Value::String(s) => s.parse::<u128>().ok(),
            _ => None,
        };
        n.filter(|n| *n <= max).ok_or_else(|| {
            err(
                at,
                format!("expected {name} (0 to {max}), got {}", shown(v)),
            )
        })
    }

    fn signed(
        &mut self,
        v: &Value,
        at: &str,
        (min, max): (i128, i128),
        name: &str,
    ) -> Result<i128, JsonError> {
        let n = match v {
            Value::Number(n) => n.as_i64().map(i128::from),
            Value::String(s) => s.parse::<i128>().ok(),
            _ => None,
        };
        n.filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            err(
                at,
                format!("expected {name} ({min} to {max}), got {}", shown(v)),
            )
        })
    }

    fn value(&mut self, ty: &Ty, v: &Value, at: &str, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(err(at, "nested too deeply"));
        }
        let depth = depth + 1;
        match ty {
            Ty::Bool => match v {
                Value::Bool(b) => self.out.push(u8::from(*b)),
                _ => return Err(err(at, format!("expected a boolean, got {}", shown(v)))),
            },
            Ty::U8 => {
                let n = self.unsigned(v, at, u8::MAX.into(), "u8")?;
                self.out.push(n as u8);
            }
            Ty::I8 => {
                let n = self.signed(v, at, (i8::MIN.into(), i8::MAX.into()), "i8")?;
                self.out.push(n as i8 as u8);
            }
            Ty::U16 => {
                let n = self.unsigned(v, at, u16::MAX.into(), "u16")?;
                self.varint(n);
            }
            Ty::U32 => {
                let n = self.unsigned(v, at, u32::MAX.into(), "u32")?;
                self.varint(n);
            }
            Ty::U64 | Ty::Usize => {
                let n = self.unsigned(v, at, u64::MAX.into(), "u64")?;
                self.varint(n);
            }
            Ty::U128 => {
                let n = self.unsigned(v, at, u128::MAX, "u128")?;
                self.varint(n);
            }
            Ty::I16 => {
                let n = self.signed(v, at, (i16::MIN.into(), i16::MAX.into()), "i16")?;
                self.zigzag(n);
            }
            Ty::I32 => {
                let n = self.signed(v, at, (i32::MIN.into(), i32::MAX.into()), "i32")?;
                self.zigzag(n);
            }
            Ty::I64 | Ty::Isize => {
                let n = self.signed(v, at, (i64::MIN.into(), i64::MAX.into()), "i64")?;
                self.zigzag(n);
            }
            Ty::I128 => {
                let n = self.signed(v, at, (i128::MIN, i128::MAX), "i128")?;
                self.zigzag(n);
            }
            Ty::F32 => match v.as_f64() {
                Some(f) => self.out.extend_from_slice(&(f as f32).to_le_bytes()),
                None => return Err(err(at, format!("expected a number, got {}", shown(v)))),
            },
            Ty::F64 => match v.as_f64() {
                Some(f) => self.out.extend_from_slice(&f.to_le_bytes()),
                None => return Err(err(at, format!("expected a number, got {}", shown(v)))),
            },
            Ty::Char => match v.as_str() {
                Some(s) if s.chars().count() == 1 => self.bytes(s.as_bytes()),
                _ => {
                    return Err(err(at, format!("expected one character, got {}", shown(v))));
                }
            },
            Ty::String => match v {
                Value::String(s) => self.bytes(s.as_bytes()),
                _ => return Err(err(at, format!("expected a string, got {}", shown(v)))),
            },
            Ty::ByteArray => match v {
                Value::String(s) => self.bytes(s.as_bytes()),
                Value::Array(items) => {
                    let mut bytes = Vec::with_capacity(items.len());
                    for (i, b) in items.iter().enumerate() {
                        let n = self.unsigned(b, &item(at, i), u8::MAX.into(), "a byte")?;
                        bytes.push(n as u8);
                    }
                    self.bytes(&bytes);
                }
                _ => {
                    return Err(err(
                        at,
                        format!(
                            "expected bytes (a string or an array of numbers), got {}",
                            shown(v)
                        ),
                    ));
                }
            },
            Ty::Option(inner) => match v {
                Value::Null => self.out.push(0),
                _ => {
                    self.out.push(1);
                    self.value(&inner.ty, v, at, depth)?;
                }
            },
            Ty::Unit | Ty::UnitStruct => {
                if !v.is_null() {
                    return Err(err(at, format!("expected null, got {}", shown(v))));
                }
            }
            Ty::NewtypeStruct(inner) => self.value(&inner.ty, v, at, depth)?,
            // Bytes (`&[u8]` and `Vec<u8>` have this schema) may be given as a string.
            Ty::Seq(inner) if matches!(inner.ty, Ty::U8) && v.is_string() => {
                self.bytes(v.as_str().unwrap_or_default().as_bytes());
            }
            Ty::Seq(inner) => {
                let items = array(v, at)?;
                self.varint(items.len() as u128);
                for (i, x) in items.iter().enumerate() {
                    self.value(&inner.ty, x, &item(at, i), depth)?;
                }
            }
            Ty::Tuple(types) | Ty::TupleStruct(types) => self.tuple(types, v, at, depth)?,
            Ty::Map { key, val } => self.map(key, val, v, at, depth)?,
            Ty::Struct(fields) => self.fields(fields, v, at, depth)?,
            Ty::Enum(variants) => self.variant(variants, v, at, depth)?,
            Ty::Schema => return Err(err(at, "a schema value cannot be given as JSON")),
        }
        Ok(())
    }

    fn tuple(
        &mut self,
        types: &[OwnedNamedType],
        v: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), JsonError> {
        let items = array(v, at)?;
        if items.len() != types.len() {
            return Err(err(
                at,
                format!(
                    "expected an array of {} items, got {}",
                    types.len(),
                    items.len()
                ),
            ));
        }
        for (i, (t, x)) in types.iter().zip(items).enumerate() {
            self.value(&t.ty, x, &item(at, i), depth)?;
        }
        Ok(())
    }

    fn map(
        &mut self,
        key: &OwnedNamedType,
        val: &OwnedNamedType,
        v: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), JsonError> {
        match (v, &key.ty) {
            (Value::Object(entries), Ty::String) => {
                self.varint(entries.len() as u128);
                for (k, x) in entries {
                    self.bytes(k.as_bytes());
                    self.value(&val.ty, x, &field(at, k), depth)?;
                }
            }
            _ => {
                let pairs = array(v, at)?;
                self.varint(pairs.len() as u128);
                for (i, pair) in pairs.iter().enumerate() {
                    let at = item(at, i);
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, x]) => {
                            self.value(&key.ty, k, &format!("{at}.key"), depth)?;
                            self.value(&val.ty, x, &format!("{at}.value"), depth)?;
                        }
                        _ => {
                            return Err(err(
                                &at,
                                format!("expected a [key, value] pair, got {}", shown(pair)),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn fields(
        &mut self,
        fields: &[OwnedNamedValue],
        v: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), JsonError> {
        let Value::Object(object) = v else {
            return Err(err(at, format!("expected an object, got {}", shown(v))));
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !fields.iter().any(|f| &f.name == *k))
        {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            return Err(err(
                &field(at, unknown),
                format!("no such field (the fields are: {})", known.join(", ")),
            ));
        }
        for f in fields {
            let at = field(at, &f.name);
            match object.get(&f.name) {
                Some(x) => self.value(&f.ty.ty, x, &at, depth)?,
                // A missing optional field is `None`, as serde reads it.
                None if matches!(f.ty.ty, Ty::Option(_)) => self.out.push(0),
                None => {
                    return Err(err(
                        &at,
                        format!("missing field (of type {})", f.ty.to_pseudocode()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn variant(
        &mut self,
        variants: &[wirecall::typed::postcard_schema::schema::owned::OwnedNamedVariant],
        v: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), JsonError> {
        let names = || {
            let names: Vec<&str> = variants.iter().map(|x| x.name.as_str()).collect();
            names.join(", ")
        };
        let (name, payload) = match v {
            Value::String(name) => (name.as_str(), None),
            Value::Object(o) if o.len() == 1 => match o.iter().next() {
                Some((name, payload)) => (name.as_str(), Some(payload)),
                None => unreachable_variant(at)?,
            },
            _ => {
                return Err(err(
                    at,
                    format!(
                        "expected a variant (\"Name\" or {{\"Name\": ...}}; one of {}), got {}",
                        names(),
                        shown(v)
                    ),
                ));
            }
        };
        let Some((index, variant)) = variants.iter().enumerate().find(|(_, x)| x.name == name)
        else {
            return Err(err(
                at,
                format!("no variant {name:?} (the variants are: {})", names()),
            ));
        };
        self.varint(index as u128);
        let at = field(at, name);
        match (&variant.ty, payload) {
            (Variant::UnitVariant, None | Some(Value::Null)) => Ok(()),
            (Variant::NewtypeVariant(inner), Some(x)) => self.value(&inner.ty, x, &at, depth),
            (Variant::TupleVariant(types), Some(x)) => self.tuple(types, x, &at, depth),
            (Variant::StructVariant(fields), Some(x)) => self.fields(fields, x, &at, depth),
            (Variant::UnitVariant, Some(x)) => Err(err(
                &at,
                format!("a unit variant takes no value, got {}", shown(x)),
            )),
            (_, None) => Err(err(&at, "this variant needs a value: {\"Name\": ...}")),
        }
    }
}

fn unreachable_variant<T>(at: &str) -> Result<T, JsonError> {
    Err(err(at, "expected a variant"))
}

fn array<'v>(v: &'v Value, at: &str) -> Result<&'v Vec<Value>, JsonError> {
    v.as_array()
        .ok_or_else(|| err(at, format!("expected an array, got {}", shown(v))))
}

/// A value as shown in a message: its kind, and itself when short.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= 40 {
        format!("{} ({text})", kind(v))
    } else {
        kind(v).to_owned()
    }
}

/// Decodes the postcard bytes of a value of `schema` at the start of `bytes` into JSON;
/// returns it and the bytes after it.
///
/// # Errors
///
/// [`JsonError`] when the bytes are not a value of the schema.
pub(crate) fn decode<'b>(
    schema: &OwnedNamedType,
    bytes: &'b [u8],
) -> Result<(Value, &'b [u8]), JsonError> {
    let mut d = Decoder { rest: bytes };
    let v = d.value(&schema.ty, "", 0)?;
    Ok((v, d.rest))
}

/// Decodes exactly one value of `schema` from `bytes` (nothing may follow).
///
/// # Errors
///
/// As [`decode`], and bytes left over.
pub(crate) fn decode_all(schema: &OwnedNamedType, bytes: &[u8]) -> Result<Value, JsonError> {
    match decode(schema, bytes)? {
        (v, []) => Ok(v),
        (_, rest) => Err(err(
            "",
            format!("{} bytes left over after the value", rest.len()),
        )),
    }
}

/// Bytes as JSON: a string when they are text (UTF-8 without control characters but tab
/// and line ends), else an array of numbers.
fn shown_bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s)
            if !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            Value::String(s.to_owned())
        }
        _ => Value::Array(b.iter().map(|x| Value::Number((*x).into())).collect()),
    }
}

struct Decoder<'b> {
    rest: &'b [u8],
}

impl<'b> Decoder<'b> {
    fn take(&mut self, n: usize, at: &str) -> Result<&'b [u8], JsonError> {
        if self.rest.len() < n {
            return Err(err(at, "the bytes end in the middle of the value"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self, at: &str) -> Result<u8, JsonError> {
        Ok(self.take(1, at)?.first().copied().unwrap_or(0))
    }

    fn varint(&mut self, at: &str, max: u128) -> Result<u128, JsonError> {
        let mut v: u128 = 0;
        for shift in (0..).step_by(7).take(19) {
            let b = self.byte(at)?;
            v |= u128::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return if v <= max {
                    Ok(v)
                } else {
                    Err(err(at, format!("a number over {max}")))
                };
            }
        }
        Err(err(at, "a malformed varint"))
    }

    fn zigzag(&mut self, at: &str, bits: u32) -> Result<i128, JsonError> {
        let max = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let z = self.varint(at, max)?;
        Ok(((z >> 1) as i128) ^ -((z & 1) as i128))
    }

    fn len(&mut self, at: &str) -> Result<usize, JsonError> {
        let n = self.varint(at, u64::MAX.into())?;
        // A length cannot be more than the bytes left (every item takes at least one byte,
        // or none for unit items: those are bounded by the input the same way below).
        usize::try_from(n).map_err(|_| err(at, "a length too large"))
    }

    fn bytes(&mut self, at: &str) -> Result<&'b [u8], JsonError> {
        let n = self.len(at)?;
        self.take(n, at)
    }

    fn value(&mut self, ty: &Ty, at: &str, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(err(at, "nested too deeply"));
        }
        let depth = depth + 1;
        let number = |n: u128| -> Value {
            u64::try_from(n).map_or_else(
                |_| Value::String(n.to_string()),
                |n| Value::Number(n.into()),
            )
        };
        let signed = |n: i128| -> Value {
            i64::try_from(n).map_or_else(
                |_| Value::String(n.to_string()),
                |n| Value::Number(n.into()),
            )
        };
        Ok(match ty {
            Ty::Bool => match self.byte(at)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(err(at, format!("a boolean byte of {b}"))),
            },
            Ty::U8 => number(self.byte(at)?.into()),
            Ty::I8 => signed((self.byte(at)? as i8).into()),
            Ty::U16 => number(self.varint(at, u16::MAX.into())?),
            Ty::U32 => number(self.varint(at, u32::MAX.into())?),
            Ty::U64 | Ty::Usize => number(self.varint(at, u64::MAX.into())?),
            Ty::U128 => number(self.varint(at, u128::MAX)?),
            Ty::I16 => signed(self.zigzag(at, 16)?),
            Ty::I32 => signed(self.zigzag(at, 32)?),
            Ty::I64 | Ty::Isize => signed(self.zigzag(at, 64)?),
            Ty::I128 => signed(self.zigzag(at, 128)?),
            Ty::F32 => {
                let b = self.take(4, at)?;
                let f = f32::from_le_bytes(b.try_into().unwrap_or_default());
                Number::from_f64(f.into()).map_or(Value::Null, Value::Number)
            }
            Ty::F64 => {
                let b = self.take(8, at)?;
                let f = f64::from_le_bytes(b.try_into().unwrap_or_default());
                Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
            Ty::Char | Ty::String => {
                let b = self.bytes(at)?;
                match std::str::from_utf8(b) {
                    Ok(s) => Value::String(s.to_owned()),
                    Err(_) => return Err(err(at, "text that is not UTF-8")),
                }
            }
            Ty::ByteArray => shown_bytes(self.bytes(at)?),
            Ty::Seq(inner) if matches!(inner.ty, Ty::U8) => shown_bytes(self.bytes(at)?),
            Ty::Option(inner) => match self.byte(at)? {
                0 => Value::Null,
                1 => self.value(&inner.ty, at, depth)?,
                b => return Err(err(at, format!("an option byte of {b}"))),
            },
            Ty::Unit | Ty::UnitStruct => Value::Null,
            Ty::NewtypeStruct(inner) => self.value(&inner.ty, at, depth)?,
            Ty::Seq(inner) => {
                let n = self.items(at)?;
                let mut items = Vec::with_capacity(n.min(1024));
                for i in 0..n {
                    items.push(self.value(&inner.ty, &item(at, i), depth)?);
                }
                Value::Array(items)
            }
            Ty::Tuple(types) | Ty::TupleStruct(types) => self.tuple(types, at, depth)?,
            Ty::Map { key, val } => {
                let n = self.items(at)?;
                let string_keys = matches!(key.ty, Ty::String);
                let mut object = Map::new();
                let mut pairs = Vec::new();
                for i in 0..n {
                    let k = self.value(&key.ty, &item(at, i), depth)?;
                    let x = self.value(&val.ty, &item(at, i), depth)?;
                    match (string_keys, k) {
                        (true, Value::String(k)) => {
                            object.insert(k, x);
                        }
                        (_, k) => pairs.push(Value::Array(vec![k, x])),
                    }
                }
                if string_keys {
                    Value::Object(object)
                } else {
                    Value::Array(pairs)
                }
            }
            Ty::Struct(fields) => self.fields(fields, at, depth)?,
            Ty::Enum(variants) => {
                let index = self.varint(at, u32::MAX.into())?;
                let Some(variant) = usize::try_from(index).ok().and_then(|i| variants.get(i))
                else {
                    return Err(err(
                        at,
                        format!("variant number {index}, which the type has not"),
                    ));
                };
                let at = field(at, &variant.name);
                let payload = match &variant.ty {
                    Variant::UnitVariant => return Ok(Value::String(variant.name.clone())),
                    Variant::NewtypeVariant(inner) => self.value(&inner.ty, &at, depth)?,
                    Variant::TupleVariant(types) => self.tuple(types, &at, depth)?,
                    Variant::StructVariant(fields) => self.fields(fields, &at, depth)?,
                };
                let mut object = Map::new();
                object.insert(variant.name.clone(), payload);
                Value::Object(object)
            }
            Ty::Schema => return Err(err(at, "a schema value cannot be shown as JSON")),
        })
    }

    /// A sequence's or map's length, refused when it is more than its bytes could hold:
    /// most items take a byte at least, and items that take none (units) are allowed up
    /// to 65,536 more, so what a decode builds is bounded by its input.
    fn items(&mut self, at: &str) -> Result<usize, JsonError> {
        let n = self.len(at)?;
        if n > self.rest.len().saturating_add(1 << 16) {
            return Err(err(
                at,
                format!("a length of {n}, more than the bytes hold"),
            ));
        }
        Ok(n)
    }

    fn tuple(
        &mut self,
        types: &[OwnedNamedType],
        at: &str,
        depth: usize,
    ) -> Result<Value, JsonError> {
        let mut items = Vec::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            items.push(self.value(&t.ty, &item(at, i), depth)?);
        }
        Ok(Value::Array(items))
    }

    fn fields(
        &mut self,
        fields: &[OwnedNamedValue],
        at: &str,
        depth: usize,
    ) -> Result<Value, JsonError> {
        let mut object = Map::new();
        for f in fields {
            let v = self.value(&f.ty.ty, &field(at, &f.name), depth)?;
            object.insert(f.name.clone(), v);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use wirecall::typed::Schema;

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
    #[postcard(crate = wirecall::typed::postcard_schema)]
    struct Add {
        a: i32,
        b: u64,
        note: Option<String>,
    }

    #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
    #[postcard(crate = wirecall::typed::postcard_schema)]
    enum Shape {
        Empty,
        Circle(u32),
        Pair(i8, bool),
        Rect { w: u16, h: u16 },
    }

    fn schema<T: Schema + ?Sized>() -> OwnedNamedType {
        T::SCHEMA.into()
    }

    /// JSON encodes to the bytes postcard gives the Rust value, and decodes back.
    fn round_trip<T: Serialize + Schema>(value: &T, json: Value) {
        let bytes = encode(&schema::<T>(), &json).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(value).unwrap(), "{json}");
        assert_eq!(decode_all(&schema::<T>(), &bytes).unwrap(), json);
    }

    #[test]
    fn json_and_postcard_agree() {
        round_trip(
            &Add {
                a: -5,
                b: 300,
                note: Some("hi".into()),
            },
            json!({"a": -5, "b": 300, "note": "hi"}),
        );
        round_trip(
            &Add {
                a: i32::MIN,
                b: u64::MAX,
                note: None,
            },
            json!({"a": i32::MIN, "b": u64::MAX, "note": null}),
        );
        round_trip(&Shape::Empty, json!("Empty"));
        round_trip(&Shape::Circle(7), json!({"Circle": 7}));
        round_trip(&Shape::Pair(-1, true), json!({"Pair": [-1, true]}));
        round_trip(
            &Shape::Rect { w: 3, h: 400 },
            json!({"Rect": {"w": 3, "h": 400}}),
        );
        round_trip(&vec![1u8, 2, 3], json!([1, 2, 3]));
        round_trip(&b"text".to_vec(), json!("text"));
        round_trip(&(7u32, "x".to_owned()), json!([7, "x"]));
        round_trip(&Some(&b"text"[..]), json!("text"));
        round_trip(&&[0xffu8, 0][..], json!([255, 0]));
        round_trip(&(), json!(null));
    }

    #[test]
    fn a_missing_optional_field_is_none() {
        let bytes = encode(&schema::<Add>(), &json!({"a": 1, "b": 2})).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(&Add {
                a: 1,
                b: 2,
                note: None
            })
            .unwrap()
        );
    }

    #[test]
    fn errors_name_where_they_are() {
        let s = schema::<Add>();
        let e = |v: Value| encode(&s, &v).unwrap_err().to_string();
        assert_eq!(
            e(json!({"a": "x", "b": 1})),
            "at a: expected i32 (-2147483648 to 2147483647), got a string (\"x\")"
        );
        assert_eq!(e(json!({"a": 1})), "at b: missing field (of type u64)");
        assert_eq!(
            e(json!({"a": 1, "b": 1, "c": 2})),
            "at c: no such field (the fields are: a, b, note)"
        );
        assert_eq!(
            e(json!({"a": 1, "b": -1})),
            "at b: expected u64 (0 to 18446744073709551615), got a number (-1)"
        );
        assert_eq!(e(json!([1, 2])), "expected an object, got an array ([1,2])");
        let shape = schema::<Shape>();
        let e = |v: Value| encode(&shape, &v).unwrap_err().to_string();
        assert_eq!(
            e(json!("Square")),
            "no variant \"Square\" (the variants are: Empty, Circle, Pair, Rect)"
        );
        assert_eq!(
            e(json!({"Rect": {"w": 1, "h": "tall"}})),
            "at Rect.h: expected u16 (0 to 65535), got a string (\"tall\")"
        );
        assert_eq!(
            e(json!({"Pair": [1]})),
            "at Pair: expected an array of 2 items, got 1"
        );
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        let s = schema::<Shape>();
        for bytes in [
            &[9u8][..],
            &[1],
            &[3, 0x80],
            &[2, 1, 2],
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode_all(&s, bytes).is_err(), "{bytes:?}");
        }
        let seq = schema::<Vec<()>>();
        assert!(decode_all(&seq, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(
            decode_all(&schema::<Add>(), &[2, 4, 0, 7]).is_err(),
            "trailing bytes"
        );
    }
}
