//! A minimal JSON object writer for server frames.
//!
//! Server frames splice client-supplied JSON (`data`, `info`) in verbatim, so
//! they are written field by field instead of going through a `Value`: no
//! parse, no re-serialisation, one allocation per frame.

use bytes::Bytes;

pub(super) struct Obj {
    buf: Vec<u8>,
    first: bool,
}

impl Obj {
    /// An object whose first field is `"type": ty`.
    pub(super) fn typed(ty: &str) -> Self {
        Self::typed_sized(ty, 0)
    }

    /// Like [`Self::typed`], with room for `payload` bytes of field values
    /// beside ~96 of keys and numbers: a kept frame then holds no unused
    /// capacity.
    pub(super) fn typed_sized(ty: &str, payload: usize) -> Self {
        let mut o = Self::sized(96 + payload);
        o.str("type", ty);
        o
    }

    /// An object with no fields yet.
    pub(super) fn bare() -> Self {
        Self::sized(96)
    }

    fn sized(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity), first: true }.open()
    }

    fn open(mut self) -> Self {
        self.buf.push(b'{');
        self
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub(super) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        serde_json::to_writer(&mut self.buf, value).expect("writing to a Vec cannot fail");
        self
    }

    pub(super) fn num(&mut self, key: &str, value: impl itoa_like::Num) -> &mut Self {
        self.key(key);
        value.write(&mut self.buf);
        self
    }

    pub(super) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// JSON text spliced in as is; empty means `null`.
    pub(super) fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(if json.is_empty() { b"null" } else { json });
        self
    }

    /// A nested object or array written by `f` into the raw buffer.
    pub(super) fn with(&mut self, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        f(&mut self.buf);
        self
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }

    pub(super) fn bytes(self) -> Bytes {
        Bytes::from(self.finish())
    }
}

/// Numbers without going through `format!`.
pub(super) mod itoa_like {
    pub trait Num {
        fn write(self, buf: &mut Vec<u8>);
    }
    macro_rules! num {
        ($($t:ty),*) => {$(
            impl Num for $t {
                fn write(self, buf: &mut Vec<u8>) {
                    use std::io::Write;
                    let _ = write!(buf, "{}", self);
                }
            }
        )*};
    }
    num!(u32, u64, i64);
}
