//! Bounds-checked little-endian reads over a byte slice.

use std::fmt::Display;

use crate::error::GgufError;

/// A fixed-size little-endian scalar as GGUF stores it.
pub(crate) trait Le: Sized + Copy {
    const SIZE: usize;
    /// Decodes from exactly `SIZE` bytes.
    fn from_le(bytes: &[u8]) -> Self;
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! impl_le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
impl_le!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// A read position in a buffer; every read checks the bytes left before touching them.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// The next `n` bytes; `what` (formatted only on error) names the field for the message.
    pub(crate) fn take(&mut self, n: u64, what: impl Display) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos(),
                needed: n,
                available,
            });
        }
        // n <= remaining <= usize::MAX, so the cast and the addition are exact.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    pub(crate) fn read<T: Le>(&mut self, what: impl Display) -> Result<T, GgufError> {
        self.take(T::SIZE as u64, what).map(T::from_le)
    }

    /// `n` consecutive scalars. The caller has bounded `n` by the bytes left, so the
    /// allocation is at most the size of the input.
    pub(crate) fn read_vec<T: Le>(
        &mut self,
        n: u64,
        what: impl Display,
    ) -> Result<Vec<T>, GgufError> {
        // A saturated length is simply more than is left, so `take` refuses it.
        let bytes = self.take(n.saturating_mul(T::SIZE as u64), what)?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::from_le).collect())
    }

    /// A GGUF string (u64 length + UTF-8 bytes) of at most `max` bytes.
    pub(crate) fn string(&mut self, max: u64, what: impl Display) -> Result<&'a str, GgufError> {
        let offset = self.pos();
        let len: u64 = self.read(format_args!("length of {what}"))?;
        if len > max {
            return Err(GgufError::StringTooLong {
                what: what.to_string(),
                offset,
                len,
                max,
            });
        }
        let bytes = self.take(len, format_args!("bytes of {what}"))?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let mut c = Cursor::new(&[1, 0, 0, 0, 0xff]);
        assert_eq!(c.read::<u32>("a").ok(), Some(1));
        assert_eq!(c.read::<i8>("b").ok(), Some(-1));
        let err = c.read::<u8>("c").unwrap_err();
        assert!(matches!(
            err,
            GgufError::Truncated {
                offset: 5,
                needed: 1,
                available: 0,
                ..
            }
        ));
    }

    #[test]
    fn string_checks_cap_before_reading() {
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let err = Cursor::new(&bytes).string(16, "s").unwrap_err();
        assert!(matches!(
            err,
            GgufError::StringTooLong { len: u64::MAX, .. }
        ));
    }
}
