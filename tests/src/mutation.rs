//! Mutations of real inputs for the property tests that fuzz parsers (`tests/tests/fuzz_parsers.rs`,
//! `agent/tests/fuzz_requests.rs`): a few byte edits at positions taken modulo the length.

use proptest::prelude::*;

/// One edit of an input: overwrite, insert or delete a byte at a position (taken modulo the
/// length), or cut the input there.
#[derive(Clone, Debug)]
pub enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

/// One to five edits, overwrites the most likely.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..6)
}

pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *edit {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] = b;
            }
            Edit::Insert(i, b) => {
                let i = at(i, bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// The same edits on text, kept valid UTF-8 (an edit that breaks it is dropped).
pub fn mutate_text(text: &str, edits: &[Edit]) -> String {
    let bytes = mutate(text.as_bytes().to_vec(), edits);
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}
