//! Last-writer-wins per item: the rule both favourites protocols share.
//!
//! An incoming state replaces ours only if it is strictly newer. At an exact tie of
//! dates with different actions, DELETE wins, so the merge is commutative and every
//! side converges to the same state whoever merges first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ItemId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Add,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ADD" => Some(Self::Add),
            "DELETE" => Some(Self::Delete),
            _ => None,
        }
    }

    fn tie_rank(self) -> u8 {
        match self {
            Self::Add => 0,
            Self::Delete => 1,
        }
    }
}

/// An item's state: what was last done to it, and when (Unix ms, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub action: Action,
    pub at_ms: i64,
}

impl Stamp {
    /// Whether `self` should replace `other`.
    pub fn beats(&self, other: &Stamp) -> bool {
        (self.at_ms, self.action.tie_rank()) > (other.at_ms, other.action.tie_rank())
    }
}

pub type ItemStates = BTreeMap<ItemId, Stamp>;

/// The items of `incoming` that should replace (or add to) `ours`.
pub fn winners<'a>(
    ours: &ItemStates,
    incoming: impl IntoIterator<Item = (&'a ItemId, &'a Stamp)>,
) -> Vec<(ItemId, Stamp)> {
    incoming
        .into_iter()
        .filter(|(item, stamp)| ours.get(*item).is_none_or(|current| stamp.beats(current)))
        .map(|(item, stamp)| (item.clone(), *stamp))
        .collect()
}

/// Both sides merged: per item, the winning state.
pub fn merge(a: &ItemStates, b: &ItemStates) -> ItemStates {
    let mut merged = a.clone();
    merged.extend(winners(a, b));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp(action: Action, at_ms: i64) -> Stamp {
        Stamp { action, at_ms }
    }

    #[test]
    fn strictly_newer_wins_and_equal_keeps_ours() {
        let ours = stamp(Action::Add, 100);
        assert!(stamp(Action::Delete, 101).beats(&ours));
        assert!(!stamp(Action::Delete, 99).beats(&ours));
        assert!(
            !stamp(Action::Add, 100).beats(&ours),
            "identical state changes nothing"
        );
    }

    #[test]
    fn exact_tie_with_different_actions_is_won_by_delete_from_either_side() {
        let add = stamp(Action::Add, 100);
        let delete = stamp(Action::Delete, 100);
        assert!(delete.beats(&add));
        assert!(!add.beats(&delete));
    }

    fn states() -> impl Strategy<Value = ItemStates> {
        let item = (0u8..6).prop_map(|n| ItemId::parse(&format!("item-{n}")).unwrap());
        let stamp = (
            prop_oneof![Just(Action::Add), Just(Action::Delete)],
            0i64..5,
        )
            .prop_map(|(action, at_ms)| Stamp { action, at_ms });
        proptest::collection::btree_map(item, stamp, 0..6)
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in states(), b in states()) {
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in states(), b in states(), c in states()) {
            prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in states(), b in states()) {
            prop_assert_eq!(merge(&a, &a), a.clone());
            let once = merge(&a, &b);
            prop_assert_eq!(merge(&once, &b), once);
        }
    }
}
