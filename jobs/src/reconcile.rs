//! `favourites.reconcile`: two-way sync of one user's favourites with one remote source
//! speaking the Conference Compass protocol. GET the remote list, merge it into ours
//! last-writer-wins, POST back the items where ours is newer. Running it again changes
//! nothing; a remote 401/403 stops it for good.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use syncline_domain::favourites::{
    ItemId, UserId, cc, format_action_date,
    lww::{self, Action, ItemStates, Stamp},
    parse_action_date, sources,
};
use uuid::Uuid;

use crate::core::{
    EnqueueError, EnqueueOptions, Job, JobContext, JobError, enqueue, outbound, runner,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconcile {
    pub source_id: Uuid,
    pub user_id: String,
}

/// An item as the Conference Compass protocol writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireItem {
    pub item: String,
    pub action: String,
    #[serde(rename = "actionDate")]
    pub action_date: String,
}

impl WireItem {
    pub fn from_state(item: &ItemId, stamp: &Stamp) -> Self {
        Self {
            item: item.as_str().to_owned(),
            action: stamp.action.as_str().to_owned(),
            action_date: format_action_date(stamp.at_ms),
        }
    }
}

impl Job for Reconcile {
    const QUEUE: &'static str = "favourites.reconcile";
    const DEDUPE_ONLY_WHILE_WAITING: bool = true;
    const FAIR: bool = true;

    fn fair_key(&self) -> Option<String> {
        Some(self.source_id.to_string())
    }

    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let user = UserId::parse(&self.user_id).map_err(|e| JobError::permanent(e.to_string()))?;
        let mut conn = ctx.pool.acquire().await?;
        let link = sources::link(&mut conn, self.source_id, &user)
            .await?
            .ok_or_else(|| {
                JobError::permanent("the source is gone or holds no token for this user")
            })?;
        drop(conn);
        runner::record_tenant(link.tenant_id);
        let base = link.base_url.trim_end_matches('/');

        let listed = outbound::fetch(
            ctx.http
                .get(format!("{base}/getUserFavorites"))
                .bearer_auth(&link.token),
        )
        .await?;
        let remote = remote_states(&reject_token(listed)?.body)?;

        let mut tx = ctx.pool.begin().await?;
        let incoming: Vec<_> = remote.iter().map(|(i, s)| (i.clone(), *s)).collect();
        let (ours, changed) =
            cc::apply(&mut tx, link.tenant_id, &user, &incoming, now_ms()).await?;
        if !changed.is_empty() {
            enqueue_for_user(&mut tx, link.tenant_id, &user, Some(self.source_id)).await?;
        }
        tx.commit().await?;

        let newer_here: Vec<WireItem> = lww::winners(&remote, ours.items.iter())
            .iter()
            .map(|(item, stamp)| WireItem::from_state(item, stamp))
            .collect();
        if !newer_here.is_empty() {
            let posted = outbound::fetch(
                ctx.http
                    .post(format!("{base}/postUserFavorites"))
                    .bearer_auth(&link.token)
                    .json(&newer_here),
            )
            .await?;
            reject_token(posted)?;
        }
        tracing::info!(
            pulled = changed.len(),
            pushed = newer_here.len(),
            "favourites reconciled"
        );
        Ok(())
    }
}

/// A remote 401/403 means the user's token is no longer accepted: no retry can help.
fn reject_token(response: outbound::PeerResponse) -> Result<outbound::PeerResponse, JobError> {
    let status = response.status.as_u16();
    if matches!(status, 401 | 403) {
        return Err(JobError::permanent(format!(
            "the remote favourites source rejected the user's token (HTTP {status}); set a new one"
        )));
    }
    response.classified()
}

/// The remote list as item states; a repeated item keeps its winning state.
fn remote_states(body: &str) -> Result<ItemStates, JobError> {
    let unreadable =
        |why: String| JobError::permanent(format!("remote favourites list is unreadable: {why}"));
    let items: Vec<WireItem> = serde_json::from_str(body).map_err(|e| unreadable(e.to_string()))?;
    let mut states = ItemStates::new();
    for wire in items {
        let item = ItemId::parse(&wire.item).map_err(|e| unreadable(e.to_string()))?;
        let action = Action::parse(&wire.action)
            .ok_or_else(|| unreadable(format!("action `{}`", wire.action)))?;
        let at_ms = parse_action_date(&wire.action_date).map_err(|e| unreadable(e.to_string()))?;
        let stamp = Stamp { action, at_ms };
        if states.get(&item).is_none_or(|current| stamp.beats(current)) {
            states.insert(item, stamp);
        }
    }
    Ok(states)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Enqueues a reconcile of `user` with each linked source of the tenant (but `except`),
/// in the caller's transaction; one waiting job per source and user at most.
pub async fn enqueue_for_user(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user: &UserId,
    except: Option<Uuid>,
) -> Result<(), EnqueueError> {
    for source_id in sources::linked_sources(conn, tenant_id, user).await? {
        if Some(source_id) != except {
            enqueue_one(conn, source_id, user.as_str()).await?;
        }
    }
    Ok(())
}

/// Enqueues one reconcile, unless one for the same source and user is already waiting.
pub async fn enqueue_one(
    conn: &mut PgConnection,
    source_id: Uuid,
    user_id: &str,
) -> Result<Option<String>, EnqueueError> {
    let job = Reconcile {
        source_id,
        user_id: user_id.to_owned(),
    };
    let options = EnqueueOptions {
        dedupe_key: Some(format!("{source_id}:{user_id}")),
        ..Default::default()
    };
    enqueue(conn, &job, options).await
}
