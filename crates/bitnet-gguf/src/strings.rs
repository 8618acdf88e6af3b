//! [`StringArray`]: the strings of one metadata array, kept in one buffer.

use std::fmt;

/// The elements of a string array (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`),
/// kept as one text buffer and the end offset of each string.
///
/// A `Vec<String>` costs a 24-byte header and a heap block (32 bytes at least) per
/// string: the 128k tokens and 280k merges of a Llama 3 vocabulary took about 23 MB
/// that way. Stored here they take their bytes plus 8 bytes each (about 7 MB).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StringArray {
    text: String,
    /// `ends[i]` is where string `i` ends in `text`; it starts where string `i - 1` ends
    /// (or at 0).
    ends: Vec<usize>,
}

impl StringArray {
    /// An empty array with room for `n` strings (their text grows as it is pushed).
    pub fn with_capacity(n: usize) -> StringArray {
        StringArray {
            text: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Appends one string.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    /// Releases the spare capacity that growing the text left behind.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        (i < self.len()).then(|| self.at(i))
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// String `i < len`: from where string `i - 1` ends (or 0) to its own end.
    fn at(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        &self.text[start..self.ends[i]]
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> StringArray {
        let items = items.into_iter();
        let mut array = StringArray::with_capacity(items.size_hint().0);
        items.for_each(|s| array.push(s.as_ref()));
        array.shrink_to_fit();
        array
    }
}

impl fmt::Debug for StringArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for StringArray {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for StringArray {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_in_order_with_empty_ones_kept() {
        let a: StringArray = ["<s>", "", "héllo", "a b"].into_iter().collect();
        assert_eq!(a.len(), 4);
        assert_eq!(a, ["<s>", "", "héllo", "a b"]);
        assert_eq!(a.get(0), Some("<s>"));
        assert_eq!(a.get(1), Some(""));
        assert_eq!(a.get(2), Some("héllo"));
        assert_eq!(a.get(4), None);
        assert_eq!(a.iter().next_back(), Some("a b"));
        assert_eq!(format!("{a:?}"), r#"["<s>", "", "héllo", "a b"]"#);
    }

    #[test]
    fn empty_arrays_are_equal_however_built() {
        let built: StringArray = Vec::<String>::new().into_iter().collect();
        assert!(built.is_empty());
        assert_eq!(built, StringArray::default());
        assert_eq!(built.get(0), None);
        assert_ne!(built, ["x"]);
    }
}
