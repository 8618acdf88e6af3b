//! Unicode facts the pipeline needs, matching llama.cpp's `unicode.cpp` exactly: the
//! category of every code point (from the same Unicode version, 15.1), its first lowercase
//! and NFD code point, the whitespace set, and GPT-2's byte ↔ printable-character table.

mod tables;

use tables::{CATEGORY_RANGES, LOWERCASE, NFD_FIRST};

/// A code point's category and whitespace bits, with llama.cpp's `unicode_cpt_flags` bit
/// values. `CpFlags::NONE` is what llama.cpp returns for a position outside the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpFlags(u16);

impl CpFlags {
    /// Outside the text being split: no category at all.
    pub(crate) const NONE: CpFlags = CpFlags(0);
    const UNDEFINED: u16 = 0x01;
    const NUMBER: u16 = 0x02;
    const LETTER: u16 = 0x04;
    const MARK: u16 = 0x10;
    const PUNCTUATION: u16 = 0x20;
    const SYMBOL: u16 = 0x40;
    const CONTROL: u16 = 0x80;
    const CATEGORIES: u16 = 0xFF;
    const WHITESPACE: u16 = 0x100;

    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub(crate) fn is_mark(self) -> bool {
        self.0 & Self::MARK != 0
    }
    pub(crate) fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    pub(crate) fn is_symbol(self) -> bool {
        self.0 & Self::SYMBOL != 0
    }
    pub(crate) fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// llama.cpp's `as_uint() != 0`: false only for `NONE` (every code point has a category).
    pub(crate) fn is_some(self) -> bool {
        self.0 != 0
    }
    /// The single category bit, as llama.cpp's `category_flag()`.
    fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
}

/// The flags of a code point.
pub(crate) fn flags(c: char) -> CpFlags {
    let cp = u32::from(c);
    // Every table starts at 0, so the index is at least 0; the fallback is unreachable.
    let i = CATEGORY_RANGES
        .partition_point(|&(start, _)| start <= cp)
        .saturating_sub(1);
    let category = CATEGORY_RANGES
        .get(i)
        .map_or(CpFlags::UNDEFINED, |&(_, bits)| u16::from(bits));
    let ws = if is_whitespace(c) {
        CpFlags::WHITESPACE
    } else {
        0
    };
    CpFlags(category | ws)
}

/// llama.cpp's whitespace set (`unicode_set_whitespace`): exactly Unicode's White_Space
/// property, which is also what `char::is_whitespace` implements.
pub(crate) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// The first code point of `c`'s lowercase form (llama.cpp's `unicode_tolower`).
pub(crate) fn to_lower(c: char) -> char {
    lookup_pair(&LOWERCASE, c)
}

/// The first code point of `c`'s NFD decomposition (llama.cpp's `unicode_cpts_normalize_nfd`,
/// which keeps only that first code point).
pub(crate) fn nfd_first(c: char) -> char {
    let cp = u32::from(c);
    let i = NFD_FIRST.partition_point(|&(first, _, _)| first <= cp);
    match i.checked_sub(1).and_then(|i| NFD_FIRST.get(i)) {
        Some(&(_, last, head)) if cp <= last => char::from_u32(head).unwrap_or(c),
        _ => c,
    }
}

fn lookup_pair(table: &[(u32, u32)], c: char) -> char {
    let cp = u32::from(c);
    match table.binary_search_by_key(&cp, |&(from, _)| from) {
        Ok(i) => table
            .get(i)
            .and_then(|&(_, to)| char::from_u32(to))
            .unwrap_or(c),
        Err(_) => c,
    }
}

/// How llama.cpp's std::regex fallback sees a code point when a pattern uses `\p{..}`
/// classes: ASCII stays itself, other whitespace becomes `\x0B`, and everything else
/// becomes one byte per category (`unicode_regex_split`'s "collapsed" text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collapsed {
    Ascii(u8),
    Whitespace,
    Number,
    Letter,
    Punctuation,
    /// Any other category (marks, symbols, controls, unassigned): no implemented pattern
    /// tells them apart.
    Other,
}

pub(crate) fn collapsed(c: char) -> Collapsed {
    if let Ok(b) = u8::try_from(u32::from(c)) {
        if b < 0x80 {
            return Collapsed::Ascii(b);
        }
    }
    let f = flags(c);
    if f.is_whitespace() {
        return Collapsed::Whitespace;
    }
    match f.category() {
        CpFlags::NUMBER => Collapsed::Number,
        CpFlags::LETTER => Collapsed::Letter,
        CpFlags::PUNCTUATION => Collapsed::Punctuation,
        _ => Collapsed::Other,
    }
}

/// The printable character GPT-2's byte-level BPE uses for each byte: printable Latin-1
/// bytes stand for themselves, the other 68 bytes take U+0100.. in byte order.
static BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

const fn stands_for_itself(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 0x100u32;
    let mut b = 0usize;
    while b < 256 {
        let byte = b as u8;
        table[b] = if stands_for_itself(byte) {
            byte as char
        } else {
            next_extra += 1;
            // 0x100..0x144 are all valid scalar values.
            match char::from_u32(next_extra - 1) {
                Some(c) => c,
                None => char::REPLACEMENT_CHARACTER,
            }
        };
        b += 1;
    }
    table
}

/// The GPT-2 printable character for `byte`.
pub(crate) fn byte_to_char(byte: u8) -> char {
    BYTE_TO_CHAR[usize::from(byte)]
}

/// The byte a GPT-2 printable character stands for, if it is one of the 256.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if let Ok(b) = u8::try_from(cp) {
        return stands_for_itself(b).then_some(b);
    }
    // U+0100.. are the non-printable bytes in increasing order.
    let rank = usize::try_from(cp.checked_sub(0x100)?).ok()?;
    (0..=u8::MAX).filter(|&b| !stands_for_itself(b)).nth(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_match_llama_cpp_examples() {
        assert!(flags('a').is_letter());
        assert!(flags('É').is_letter());
        assert!(flags('٣').is_number());
        assert!(flags('²').is_number());
        assert!(flags('!').is_punctuation());
        assert!(flags('$').is_symbol());
        assert!(flags('\u{301}').is_mark());
        assert!(flags('\u{0}').is_control());
        assert!(flags(' ').is_whitespace());
        assert!(flags('\u{3000}').is_whitespace());
        assert!(!flags('\u{1C}').is_whitespace());
        // Unassigned in Unicode 15.1: undefined, which is still "some" flags.
        let unassigned = flags('\u{0378}');
        assert!(unassigned.is_some() && !unassigned.is_letter() && !unassigned.is_control());
        assert!(!CpFlags::NONE.is_some());
    }

    #[test]
    fn lower_and_nfd_take_the_first_code_point() {
        assert_eq!(to_lower('A'), 'a');
        assert_eq!(to_lower('İ'), 'i');
        assert_eq!(to_lower('a'), 'a');
        assert_eq!(nfd_first('é'), 'e');
        assert_eq!(nfd_first('한'), '\u{1112}');
        assert_eq!(nfd_first('e'), 'e');
    }

    #[test]
    fn gpt2_byte_table_is_a_bijection() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=u8::MAX {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }

    #[test]
    fn collapsed_view_follows_the_category() {
        assert_eq!(collapsed('7'), Collapsed::Ascii(b'7'));
        assert_eq!(collapsed('\u{A0}'), Collapsed::Whitespace);
        assert_eq!(collapsed('٣'), Collapsed::Number);
        assert_eq!(collapsed('é'), Collapsed::Letter);
        assert_eq!(collapsed('。'), Collapsed::Punctuation);
        assert_eq!(collapsed('\u{301}'), Collapsed::Other);
        assert_eq!(collapsed('€'), Collapsed::Other);
        assert_eq!(collapsed('\u{378}'), Collapsed::Other);
    }
}
