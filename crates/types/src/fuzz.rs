//! Mutation fuzzing shared by the input readers' tests (feature `fuzz`): a seed file is changed
//! by bit flips, truncations, insertions (random bytes, bytes that matter to the format, or a
//! special value such as a huge number) and deletions, and the reader must return records or an
//! error naming its input, never panic or grow without bound. `PROPTEST_CASES` sets the case
//! count (256 by default; 100000 for a long local run).

use proptest::prelude::*;

/// One change to a byte string; positions are taken modulo its length.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flip one bit of the byte at a position.
    Flip(usize, u8),
    /// Cut the string at a position.
    Truncate(usize),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Delete up to n bytes from a position.
    Delete(usize, usize),
}

/// Mutations whose insertions draw from `tokens` (bytes that matter to the format) and
/// `specials` (whole values worth trying: huge numbers, multi-byte characters).
pub fn mutation(
    tokens: &'static [u8],
    specials: &'static [&'static [u8]],
) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..16),
                proptest::collection::vec(prop::sample::select(tokens), 1..16),
                prop::sample::select(specials).prop_map(<[u8]>::to_vec),
            ]
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Delete(p, n)),
    ]
}

/// `b` with `muts` applied in order.
pub fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(p, bit) => {
                if !b.is_empty() {
                    b[p % len] ^= 1 << bit;
                }
            }
            Mutation::Truncate(p) => b.truncate(p % len),
            Mutation::Insert(p, bytes) => {
                let at = p % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(p, n) => {
                if !b.is_empty() {
                    let at = p % len;
                    let end = (at + n).min(b.len());
                    b.drain(at..end);
                }
            }
        }
    }
    b
}

/// Cases per fuzz test: `PROPTEST_CASES`, else 256.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_apply_at_any_position_without_panicking() {
        let b = b"abc".to_vec();
        assert_eq!(apply(b.clone(), &[Mutation::Flip(4, 0)]), b"acc"); // position 4 mod 3 = 1: b ^ 1 = c
        assert_eq!(apply(b.clone(), &[Mutation::Truncate(5)]), b"ab");
        assert_eq!(
            apply(b.clone(), &[Mutation::Insert(3, b"x".to_vec())]),
            b"abcx"
        );
        assert_eq!(apply(b.clone(), &[Mutation::Delete(1, 99)]), b"a");
        assert!(apply(Vec::new(), &[Mutation::Flip(0, 1), Mutation::Delete(0, 1)]).is_empty());
    }
}
