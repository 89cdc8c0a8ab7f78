//! Customer ids in order, the way a recompute needs a million of them.
//!
//! Sorting `String`s compares through two pointers each time: at a million
//! ids scattered over the heap that is a cache miss or two per comparison,
//! and the sort of a recompute's ids took a fifth of a second of a core.
//! Here each id's first 32 bytes are held inline as two integers, which
//! order ids the same way as the bytes do (see [`prefix`]), and only ids
//! sharing all 32 are compared whole: a server's UUIDs (36 bytes) differ
//! within the first 32 unless made in the same millisecond by one counter.

/// The order of `ids` (bytewise, as PostgreSQL's "C" collation and SQLite
/// order them): `order[k]` is the index in `ids` of the k-th smallest.
/// Equal ids keep no particular order among themselves.
pub(crate) fn id_order(ids: &[String]) -> Vec<u32> {
    let mut keyed: Vec<(u128, u128, u32)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (high, low) = prefix(id.as_bytes());
            (high, low, i as u32)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| ids[a.2 as usize].cmp(&ids[b.2 as usize]))
    });
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// `ids` put in [`id_order`], with that order (`order[k]`: where the k-th
/// came from). Each id is moved, not copied (an empty `String` left behind
/// allocates nothing).
pub(crate) fn into_id_order(mut ids: Vec<String>) -> (Vec<String>, Vec<u32>) {
    let order = id_order(&ids);
    let ids = order
        .iter()
        .map(|&i| std::mem::take(&mut ids[i as usize]))
        .collect();
    (ids, order)
}

/// The first 32 bytes of `id`, zero-padded, as two big-endian integers.
/// Where two ids' prefixes differ, they order as the ids do: at the first
/// differing byte either both ids have a byte (the same comparison), or
/// one has ended, is the other's prefix and so the smaller, and is padded
/// with a zero no byte is below. Equal prefixes say nothing (a zero byte
/// and the padding look alike): the ids are compared whole.
fn prefix(id: &[u8]) -> (u128, u128) {
    let mut bytes = [0u8; 32];
    let n = id.len().min(32);
    bytes[..n].copy_from_slice(&id[..n]);
    let (high, low) = bytes.split_at(16);
    (
        u128::from_be_bytes(high.try_into().unwrap_or_default()),
        u128::from_be_bytes(low.try_into().unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_by_order(ids: &[String]) -> Vec<String> {
        id_order(ids)
            .into_iter()
            .map(|i| ids[i as usize].clone())
            .collect()
    }

    #[test]
    fn ids_sharing_a_long_prefix_or_ending_in_zero_bytes_are_compared_whole() {
        let long = "0193a5b2-7c1e-7abc-8def-0123456789ab";
        let ids: Vec<String> = [
            format!("{long}x"),
            long.to_owned(),
            format!("{long}\0"),
            "a".into(),
            "a\0".into(),
            "a\0\0b".into(),
            "".into(),
            "\0".into(),
            "é".into(),
            "z".into(),
        ]
        .into();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(sorted_by_order(&ids), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The order is the bytes' order, for any ids: short, long, sharing
        /// prefixes, holding zero bytes, repeated.
        #[test]
        fn ids_come_in_bytewise_order(
            ids in proptest::collection::vec(
                prop_oneof![
                    "[a-c\\x00]{0,6}",
                    "0193a5b2-7c1e-7[0-9a-f]{2}-[0-9a-f]{4}-[0-9a-f]{0,12}",
                    ".{0,40}",
                ],
                0..60,
            )
        ) {
            let mut expected = ids.clone();
            expected.sort();
            prop_assert_eq!(sorted_by_order(&ids), expected);
        }
    }
}
