//! The models: what turns a piece of raw text into token ids once special tokens are cut
//! out. SPM and BPE merge adjacent symbols of a doubly linked list; WordPiece matches the
//! longest vocabulary entry.

pub(crate) mod bpe;
pub(crate) mod spm;
pub(crate) mod wpm;

/// A run of bytes `start..start + len` of the text being merged, linked to its neighbours.
/// A symbol merged into its left neighbour keeps `len == 0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Symbol {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) prev: Option<usize>,
    pub(crate) next: Option<usize>,
}

impl Symbol {
    /// One symbol per character of `text`.
    pub(crate) fn chars_of(text: &str) -> Vec<Symbol> {
        let n = text.chars().count();
        text.char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect()
    }

    /// Merges `right` into `left` (its right neighbour) and unlinks it.
    pub(crate) fn merge(symbols: &mut [Symbol], left: usize, right: usize) {
        let Some(&r) = symbols.get(right) else {
            return;
        };
        if let Some(l) = symbols.get_mut(left) {
            l.len += r.len;
            l.next = r.next;
        }
        if let Some(r) = symbols.get_mut(right) {
            r.len = 0;
        }
        if let Some(next) = r.next.and_then(|n| symbols.get_mut(n)) {
            next.prev = Some(left);
        }
    }
}
