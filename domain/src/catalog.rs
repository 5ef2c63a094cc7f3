//! The catalog Ergonode keeps us in sync with: attributes, categories and products by
//! resource id, each with a stable id of ours, and the synchronization records.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::change_log::{self, Change, ChangeType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Attribute,
    Category,
    Product,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attribute => "attribute",
            Self::Category => "category",
            Self::Product => "product",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "attribute" => Some(Self::Attribute),
            "category" => Some(Self::Category),
            "product" => Some(Self::Product),
            _ => None,
        }
    }
}

/// Our id for a resource: derived from it, so it is known before any job runs and is
/// the same on every redelivery.
pub fn stable_id(integration_id: Uuid, kind: Kind, resource_id: &str) -> String {
    let digest = Sha256::digest(format!("{integration_id}/{}/{resource_id}", kind.as_str()));
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", kind.as_str())
}

/// A created/updated resource as Ergonode described it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: Kind,
    pub resource_id: String,
    pub resource_type: String,
    pub events: Value,
    pub synchronization_id: Uuid,
}

async fn tenant_of(conn: &mut PgConnection, integration_id: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM integrations WHERE id = $1")
        .bind(integration_id)
        .fetch_one(conn)
        .await
}

/// Accepts a resource event of a synchronization: opens the synchronization's record if
/// it is new and takes the event's number, in arrival order, in one statement.
pub async fn accept_event(
    conn: &mut PgConnection,
    integration_id: Uuid,
    synchronization_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH opened AS ({OPEN_SYNCHRONIZATION}) SELECT nextval('ergonode_event_seq')"
    )))
    .bind(integration_id)
    .bind(synchronization_id)
    .fetch_one(conn)
    .await
}

/// What an event does to a resource.
#[derive(Debug, Clone)]
pub enum Effect {
    Upsert(Resource),
    Delete { kind: Kind, resource_id: String },
}

impl Effect {
    fn key(&self) -> (Kind, &str) {
        match self {
            Effect::Upsert(r) => (r.kind, &r.resource_id),
            Effect::Delete { kind, resource_id } => (*kind, resource_id),
        }
    }
}

/// The stored state of a resource.
struct Stored {
    seq: i64,
    deleted: bool,
    resource_type: String,
    events: Value,
}

/// Applies event number `seq` unless a later event was already applied to the same
/// resource (jobs may run out of order); logs a change only when the resource really
/// changed. Returns whether it changed.
pub async fn apply(
    conn: &mut PgConnection,
    integration_id: Uuid,
    seq: i64,
    effect: &Effect,
) -> Result<bool, sqlx::Error> {
    let (kind, resource_id) = effect.key();
    // Events of one resource apply one at a time (a row lock cannot cover a row that
    // does not exist yet).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "catalog/{integration_id}/{}/{resource_id}",
            kind.as_str()
        ))
        .execute(&mut *conn)
        .await?;
    let stored = sqlx::query_as::<_, (i64, bool, String, Value)>(
        "SELECT seq, deleted_at IS NOT NULL, resource_type, events FROM catalog_items
         WHERE integration_id = $1 AND kind = $2 AND resource_id = $3 FOR UPDATE",
    )
    .bind(integration_id)
    .bind(kind.as_str())
    .bind(resource_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|(seq, deleted, resource_type, events)| Stored {
        seq,
        deleted,
        resource_type,
        events,
    });
    if stored.as_ref().is_some_and(|s| s.seq >= seq) {
        return Ok(false);
    }
    let live = stored.as_ref().filter(|s| !s.deleted);
    let our_id = stable_id(integration_id, kind, resource_id);
    let change = match effect {
        Effect::Upsert(r) => {
            let same =
                live.is_some_and(|s| s.resource_type == r.resource_type && s.events == r.events);
            let change_type = if live.is_some() {
                ChangeType::Update
            } else {
                ChangeType::Create
            };
            let latest = json!({
                "id": our_id, "resource_id": r.resource_id, "resource_type": r.resource_type,
                "events": r.events, "synchronization_id": r.synchronization_id,
            });
            (!same).then_some((change_type, latest))
        }
        Effect::Delete { .. } => live.map(|_| {
            (
                ChangeType::Delete,
                json!({ "id": our_id, "resource_id": resource_id }),
            )
        }),
    };
    let written = write(conn, integration_id, seq, &our_id, effect, stored.as_ref()).await?;
    let Some((change_type, latest)) = change.filter(|_| written) else {
        return Ok(false);
    };
    let tenant_id = tenant_of(conn, integration_id).await?;
    let changed = if change_type == ChangeType::Delete {
        json!({})
    } else {
        latest.clone()
    };
    let entry = Change {
        entity: kind.as_str(),
        entity_id: our_id,
        change_type,
        latest,
        changed,
    };
    change_log::append(conn, tenant_id, &[entry]).await?;
    Ok(true)
}

/// Stores the resource's state after event `seq` (a tombstone for a deletion); `false`
/// when a concurrent later event got there first.
async fn write(
    conn: &mut PgConnection,
    integration_id: Uuid,
    seq: i64,
    our_id: &str,
    effect: &Effect,
    stored: Option<&Stored>,
) -> Result<bool, sqlx::Error> {
    let (kind, resource_id) = effect.key();
    let (resource_type, events, synchronization_id, deleted) = match effect {
        Effect::Upsert(r) => (
            r.resource_type.clone(),
            r.events.clone(),
            Some(r.synchronization_id),
            false,
        ),
        Effect::Delete { .. } => (
            stored.map_or_else(String::new, |s| s.resource_type.clone()),
            stored.map_or_else(|| json!([]), |s| s.events.clone()),
            None,
            true,
        ),
    };
    let result = sqlx::query(
        "INSERT INTO catalog_items
             (integration_id, kind, resource_id, resource_type, our_id, events, synchronization_id, seq, deleted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN now() END)
         ON CONFLICT (integration_id, kind, resource_id) DO UPDATE SET
             resource_type = EXCLUDED.resource_type, events = EXCLUDED.events,
             synchronization_id = COALESCE(EXCLUDED.synchronization_id, catalog_items.synchronization_id),
             seq = EXCLUDED.seq, deleted_at = EXCLUDED.deleted_at, updated_at = now()
         WHERE catalog_items.seq < EXCLUDED.seq",
    )
    .bind(integration_id)
    .bind(kind.as_str())
    .bind(resource_id)
    .bind(resource_type)
    .bind(our_id)
    .bind(events)
    .bind(synchronization_id)
    .bind(seq)
    .bind(deleted)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Opens a synchronization's record unless it exists. Resource events only do this
/// (never update), so the many events of one synchronization do not queue up on its row.
/// (Its size is counted on read: the catalog items it touched last.)
const OPEN_SYNCHRONIZATION: &str = "
    INSERT INTO ergonode_synchronizations (integration_id, synchronization_id, status)
    VALUES ($1, $2, 'running')
    ON CONFLICT (integration_id, synchronization_id) DO NOTHING";

/// Opens the synchronization record if it is new; `ended` closes it. Redelivered
/// events change nothing more.
pub async fn record_synchronization(
    conn: &mut PgConnection,
    integration_id: Uuid,
    synchronization_id: Uuid,
    ended: bool,
) -> Result<(), sqlx::Error> {
    let query = if ended {
        "INSERT INTO ergonode_synchronizations (integration_id, synchronization_id, status, ended_at)
         VALUES ($1, $2, 'ended', now())
         ON CONFLICT (integration_id, synchronization_id) DO UPDATE SET
             status = 'ended', ended_at = COALESCE(ergonode_synchronizations.ended_at, now())"
    } else {
        OPEN_SYNCHRONIZATION
    };
    sqlx::query(query)
        .bind(integration_id)
        .bind(synchronization_id)
        .execute(conn)
        .await?;
    Ok(())
}
