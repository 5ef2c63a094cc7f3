//! IMSHOP's favourites sync: the app sends its whole list with the date of its last sync;
//! the newer side wins the whole list, and two never-synced sides merge.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    ItemId, UserId,
    lww::{Action, Stamp},
    store::{self, UserFavourites},
};

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub user: UserId,
    /// The app's last sync, Unix ms; 0 = the user added nothing while logged out.
    pub last_sync_ms: i64,
    /// The app's full favourites list.
    pub items: Vec<ItemId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnswer {
    pub last_sync_ms: i64,
    pub items: Vec<ItemId>,
}

/// What a request does to the store and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub answer: SyncAnswer,
    pub writes: Vec<(ItemId, Stamp)>,
    pub last_sync_ms: i64,
}

/// Decides a request against the stored state (R = request date, S = stored date):
/// R > S replaces our list with theirs and stores R; S > R answers ours; R == S echoes
/// the request; R == S == 0 merges both lists and stores now.
pub fn plan(request: &SyncRequest, stored: &UserFavourites, now_ms: i64) -> Plan {
    let (r, s) = (request.last_sync_ms, stored.last_sync_ms);
    let echo = SyncAnswer {
        last_sync_ms: r,
        items: request.items.clone(),
    };
    if r > s {
        let mut writes = set_added(stored, &request.items, r);
        let kept: std::collections::BTreeSet<_> = request.items.iter().collect();
        for item in stored.added().into_iter().filter(|i| !kept.contains(i)) {
            let at_ms = stamp_after(stored, &item, r);
            writes.push((
                item,
                Stamp {
                    action: Action::Delete,
                    at_ms,
                },
            ));
        }
        return Plan {
            answer: echo,
            writes,
            last_sync_ms: r,
        };
    }
    if s > r {
        return Plan {
            answer: SyncAnswer {
                last_sync_ms: s,
                items: stored.added(),
            },
            writes: Vec::new(),
            last_sync_ms: s,
        };
    }
    if r != 0 {
        return Plan {
            answer: echo,
            writes: Vec::new(),
            last_sync_ms: s,
        };
    }
    let writes = set_added(stored, &request.items, now_ms);
    let mut union = stored.added();
    union.extend(writes.iter().map(|(item, _)| item.clone()));
    Plan {
        answer: SyncAnswer {
            last_sync_ms: now_ms,
            items: union,
        },
        writes,
        last_sync_ms: now_ms,
    }
}

/// ADD states for the items not already added, dated `at_ms`.
fn set_added(stored: &UserFavourites, items: &[ItemId], at_ms: i64) -> Vec<(ItemId, Stamp)> {
    items
        .iter()
        .filter(|item| {
            stored
                .items
                .get(*item)
                .is_none_or(|s| s.action != Action::Add)
        })
        .map(|item| {
            let at_ms = stamp_after(stored, item, at_ms);
            (
                item.clone(),
                Stamp {
                    action: Action::Add,
                    at_ms,
                },
            )
        })
        .collect()
}

/// `at_ms`, or just after the item's stored date if that is later (a partner may have
/// sent a date ahead of our clock): a list replacement always wins per item.
fn stamp_after(stored: &UserFavourites, item: &ItemId, at_ms: i64) -> i64 {
    stored
        .items
        .get(item)
        .map_or(at_ms, |s| at_ms.max(s.at_ms + 1))
}

/// Runs one IMSHOP request in the caller's transaction; the user stays locked until it
/// commits. Returns the answer and whether the store changed.
pub async fn sync(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    request: &SyncRequest,
    now_ms: i64,
) -> Result<(SyncAnswer, bool), sqlx::Error> {
    let stored = store::lock_user(conn, tenant_id, &request.user).await?;
    let plan = plan(request, &stored, now_ms);
    store::write(
        conn,
        tenant_id,
        &request.user,
        &stored,
        &plan.writes,
        plan.last_sync_ms,
    )
    .await?;
    Ok((plan.answer, !plan.writes.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<ItemId> {
        list.iter().map(|i| ItemId::parse(i).unwrap()).collect()
    }

    fn stored(last_sync_ms: i64, added: &[(&str, i64)]) -> UserFavourites {
        UserFavourites {
            last_sync_ms,
            items: added
                .iter()
                .map(|(i, at)| {
                    (
                        ItemId::parse(i).unwrap(),
                        Stamp {
                            action: Action::Add,
                            at_ms: *at,
                        },
                    )
                })
                .collect(),
        }
    }

    fn request(last_sync_ms: i64, items: &[&str]) -> SyncRequest {
        SyncRequest {
            user: UserId::parse("12345").unwrap(),
            last_sync_ms,
            items: ids(items),
        }
    }

    // The seed's own example values.
    const R: i64 = 1_644_419_057_514;
    const S_NEWER: i64 = 1_644_419_090_000;
    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn newer_request_replaces_our_list_and_stores_its_date() {
        let ours = stored(R - 1000, &[("312", 1), ("777", 2)]);
        let p = plan(&request(R, &["312", "443", "998"]), &ours, NOW);
        assert_eq!(
            p.answer,
            SyncAnswer {
                last_sync_ms: R,
                items: ids(&["312", "443", "998"])
            }
        );
        assert_eq!(p.last_sync_ms, R);
        let adds: Vec<_> = p
            .writes
            .iter()
            .filter(|(_, s)| s.action == Action::Add)
            .map(|(i, _)| i.as_str())
            .collect();
        let dels: Vec<_> = p
            .writes
            .iter()
            .filter(|(_, s)| s.action == Action::Delete)
            .map(|(i, _)| i.as_str())
            .collect();
        assert_eq!(adds, ["443", "998"]);
        assert_eq!(dels, ["777"], "replaced items become tombstones");
    }

    #[test]
    fn newer_store_answers_ours_and_changes_nothing() {
        let ours = stored(S_NEWER, &[("312", 1), ("443", 2)]);
        let p = plan(&request(R, &["312", "443", "998"]), &ours, NOW);
        assert_eq!(
            p.answer,
            SyncAnswer {
                last_sync_ms: S_NEWER,
                items: ids(&["312", "443"])
            }
        );
        assert!(p.writes.is_empty());
        assert_eq!(p.last_sync_ms, S_NEWER);
    }

    #[test]
    fn equal_dates_echo_the_request() {
        let ours = stored(R, &[("1", 1)]);
        let p = plan(&request(R, &["312", "443"]), &ours, NOW);
        assert_eq!(
            p.answer,
            SyncAnswer {
                last_sync_ms: R,
                items: ids(&["312", "443"])
            }
        );
        assert!(p.writes.is_empty());
    }

    #[test]
    fn both_zero_merges_and_stores_now() {
        let ours = stored(0, &[("100", 5)]);
        let p = plan(&request(0, &["312", "100"]), &ours, NOW);
        assert_eq!(
            p.answer,
            SyncAnswer {
                last_sync_ms: NOW,
                items: ids(&["100", "312"])
            }
        );
        assert_eq!(
            p.writes,
            vec![(
                ItemId::parse("312").unwrap(),
                Stamp {
                    action: Action::Add,
                    at_ms: NOW
                }
            )]
        );
        assert_eq!(p.last_sync_ms, NOW);
    }

    #[test]
    fn replacement_outdates_a_stored_date_ahead_of_the_request() {
        let mut ours = stored(R - 5, &[]);
        ours.items.insert(
            ItemId::parse("9").unwrap(),
            Stamp {
                action: Action::Delete,
                at_ms: R + 50,
            },
        );
        let p = plan(&request(R, &["9"]), &ours, NOW);
        assert_eq!(
            p.writes,
            vec![(
                ItemId::parse("9").unwrap(),
                Stamp {
                    action: Action::Add,
                    at_ms: R + 51
                }
            )]
        );
    }
}
