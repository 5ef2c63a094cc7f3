//! Conference Compass's per-item two-way sync: items with an action and its date;
//! each incoming item replaces ours only if it wins last-writer-wins.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    ItemId, UserId,
    lww::{self, Stamp},
    store::{self, UserFavourites},
};

/// Applies incoming items in the caller's transaction; returns the user's state after
/// it and the items that changed. Any change bumps `last_sync_ms` to `now_ms`.
pub async fn apply(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
    incoming: &[(ItemId, Stamp)],
    now_ms: i64,
) -> Result<(UserFavourites, Vec<(ItemId, Stamp)>), sqlx::Error> {
    let stored = store::lock_user(conn, tenant_id, user).await?;
    let writes = lww::winners(&stored.items, incoming.iter().map(|(i, s)| (i, s)));
    let last_sync_ms = if writes.is_empty() {
        stored.last_sync_ms
    } else {
        now_ms.max(stored.last_sync_ms + 1)
    };
    store::write(conn, tenant_id, user, &stored, &writes, last_sync_ms).await?;
    let mut after = stored;
    after.last_sync_ms = last_sync_ms;
    after.items.extend(writes.iter().cloned());
    Ok((after, writes))
}
