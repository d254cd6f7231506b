//! The local Service Bus: queues, topics and subscriptions, durable in one SQLite file in the
//! data folder (`servicebus.db`).
//!
//! Semantics follow Service Bus peek-lock as the Functions extension uses it: a receive locks the
//! message for the lock duration and increments `DeliveryCount`; complete deletes it; abandon
//! unlocks it for immediate redelivery, or dead-letters it (`MaxDeliveryCountExceeded`) once
//! `DeliveryCount` has reached the entity's max delivery count. A lock that expires (its holder
//! died) makes the message receivable again. Duplicate detection drops a second message with the
//! same `MessageId` sent to the same queue or topic within the window. Scheduled messages stay
//! invisible until their enqueue time. The `flowgrid queue` command reads the same file while a
//! host runs (WAL mode).

mod inspect;
mod peek_lock;
mod send;
mod timer_status;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// Per-namespace settings (`FLOWGRID_SB_*`).
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// Lock duration of every entity (`FLOWGRID_SB_LOCK_DURATION_SECS`, default 60).
    pub lock_duration: Duration,
    /// Max delivery count (`FLOWGRID_SB_MAX_DELIVERY_COUNT`, default 10).
    pub max_delivery_count: u32,
    /// Duplicate detection window (`FLOWGRID_SB_DUPLICATE_DETECTION_WINDOW_SECS`, default 600).
    pub duplicate_window: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_window: Duration::from_secs(600),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The body bytes.
    pub body: Vec<u8>,
    /// `MessageId`; a new GUID when absent.
    pub message_id: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
    /// `Subject` (`Label`).
    pub subject: Option<String>,
    /// `ApplicationProperties`.
    pub application_properties: Map<String, Value>,
    /// `ScheduledEnqueueTimeUtc`: invisible until then.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
}

/// Where a message is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A queue.
    Queue(String),
    /// A topic (fanned out to each of its subscriptions).
    Topic(String),
}

/// The result of a send.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Stored, with the sequence numbers of the copies (one per subscription for a topic).
    Accepted(Vec<i64>),
    /// Dropped by duplicate detection.
    Duplicate,
}

/// A message as stored (received, peeked or dead-lettered).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `SequenceNumber`.
    pub sequence_number: i64,
    /// The entity path (`queue` or `topic/Subscriptions/sub`).
    pub entity: String,
    /// `MessageId`.
    pub message_id: String,
    /// The body bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The body as text (lossy), for display.
    pub body_text: String,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `ApplicationProperties`.
    pub application_properties: Map<String, Value>,
    /// `EnqueuedTimeUtc`.
    pub enqueued_time: DateTime<Utc>,
    /// `ScheduledEnqueueTimeUtc`, when scheduled.
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
    /// `DeliveryCount`.
    pub delivery_count: u32,
    /// `LockToken` of the current lock.
    pub lock_token: Option<String>,
    /// `DeadLetterReason`.
    pub dead_letter_reason: Option<String>,
    /// `DeadLetterErrorDescription`.
    pub dead_letter_description: Option<String>,
    /// `DeadLetterSource` (set when a dead letter was resubmitted... never for local entities).
    pub dead_letter_source: Option<String>,
}

/// Counts for one entity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityCounts {
    /// Entity path.
    pub entity: String,
    /// `queue` or `subscription`.
    pub kind: String,
    /// Messages that can be received now or are locked.
    pub active: i64,
    /// Scheduled messages not yet visible.
    pub scheduled: i64,
    /// Messages in the dead-letter queue.
    pub dead_letter: i64,
}

/// A timer's persisted schedule status (`useMonitor`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimerStatus {
    /// Last firing (due time).
    pub last: DateTime<Utc>,
    /// Next due time.
    pub next: DateTime<Utc>,
    /// When the status was written.
    pub last_updated: DateTime<Utc>,
}

/// The local Service Bus namespace.
pub struct Bus {
    conn: Mutex<Connection>,
    settings: BusSettings,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, topic TEXT);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  entity TEXT NOT NULL,
  message_id TEXT NOT NULL,
  body BLOB NOT NULL,
  content_type TEXT, correlation_id TEXT, subject TEXT,
  app_props TEXT NOT NULL DEFAULT '{}',
  enqueued_at INTEGER NOT NULL,
  scheduled_at INTEGER,
  visible_at INTEGER NOT NULL,
  delivery_count INTEGER NOT NULL DEFAULT 0,
  lock_token TEXT, locked_until INTEGER,
  dead INTEGER NOT NULL DEFAULT 0,
  dl_reason TEXT, dl_description TEXT, dl_source TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (entity, dead, visible_at, seq);
-- The next message in order (receive): walked by seq, so a backlog costs no sort per receive.
CREATE INDEX IF NOT EXISTS messages_next ON messages (entity, dead, seq, visible_at, locked_until);
CREATE TABLE IF NOT EXISTS dedup (target TEXT NOT NULL, message_id TEXT NOT NULL, seen_at INTEGER NOT NULL, PRIMARY KEY (target, message_id));
CREATE TABLE IF NOT EXISTS timers (function TEXT PRIMARY KEY, last INTEGER NOT NULL, next INTEGER NOT NULL, last_updated INTEGER NOT NULL);
";

impl Bus {
    /// Opens (creating if needed) the namespace stored at `path`.
    pub fn open(path: &Path, settings: BusSettings) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
        }
        let conn =
            Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot create the tables in {}", path.display()))?;
        Ok(Self {
            conn: Mutex::new(conn),
            settings,
            notifiers: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &BusSettings {
        &self.settings
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The notifier woken when `entity` gets a message.
    pub fn notifier(&self, entity: &str) -> Arc<Notify> {
        let mut map = self
            .notifiers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(entity.to_owned()).or_default().clone()
    }

    /// Declares a queue.
    pub fn ensure_queue(&self, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind) VALUES (?1, 'queue')",
            params![name],
        )?;
        Ok(())
    }

    /// Declares a subscription `sub` of `topic`.
    pub fn ensure_subscription(&self, topic: &str, sub: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind, topic) VALUES (?1, 'subscription', ?2)",
            params![format!("{topic}/Subscriptions/{sub}"), topic],
        )?;
        Ok(())
    }

    /// Declares a topic (a topic without subscriptions drops what is sent to it, as Service Bus does).
    pub fn ensure_topic(&self, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO entities (path, kind) VALUES (?1, 'topic')",
            params![name],
        )?;
        Ok(())
    }
}

const COLUMNS: &str = "seq, entity, message_id, body, content_type, correlation_id, subject, app_props, enqueued_at, scheduled_at,
  delivery_count, lock_token, dl_reason, dl_description, dl_source";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let body: Vec<u8> = r.get(3)?;
    let props: String = r.get(7)?;
    let scheduled: Option<i64> = r.get(9)?;
    Ok(Message {
        sequence_number: r.get(0)?,
        entity: r.get(1)?,
        message_id: r.get(2)?,
        body_text: String::from_utf8_lossy(&body).into_owned(),
        body,
        content_type: r.get(4)?,
        correlation_id: r.get(5)?,
        subject: r.get(6)?,
        application_properties: serde_json::from_str(&props).unwrap_or_default(),
        enqueued_time: ms_to_time(r.get(8)?),
        scheduled_enqueue_time: scheduled.map(ms_to_time),
        delivery_count: r.get(10)?,
        lock_token: r.get(11)?,
        dead_letter_reason: r.get(12)?,
        dead_letter_description: r.get(13)?,
        dead_letter_source: r.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(dir: &tempfile::TempDir, max: u32) -> Bus {
        let b = Bus::open(
            &dir.path().join("sb.db"),
            BusSettings {
                max_delivery_count: max,
                ..BusSettings::default()
            },
        )
        .unwrap();
        b.ensure_queue("q").unwrap();
        b
    }

    fn body(b: &str) -> Outgoing {
        Outgoing {
            body: b.as_bytes().to_vec(),
            ..Outgoing::default()
        }
    }

    #[test]
    fn a_locked_message_is_not_delivered_twice_and_complete_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        b.send(&Target::Queue("q".into()), body("a")).unwrap();
        let m = b.receive("q").unwrap().unwrap();
        assert_eq!(m.delivery_count, 1);
        assert!(b.receive("q").unwrap().is_none());
        assert!(
            b.complete(m.sequence_number, m.lock_token.as_deref().unwrap())
                .unwrap()
        );
        assert_eq!(b.list().unwrap()[0].active, 0);
    }

    #[test]
    fn abandon_redelivers_at_once_until_the_max_delivery_count_then_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 3);
        b.send(&Target::Queue("q".into()), body("a")).unwrap();
        for expected in 1..=3 {
            let m = b.receive("q").unwrap().unwrap();
            assert_eq!(m.delivery_count, expected);
            let dead = b
                .abandon(m.sequence_number, m.lock_token.as_deref().unwrap(), "boom")
                .unwrap();
            assert_eq!(dead, expected == 3);
        }
        assert!(b.receive("q").unwrap().is_none());
        let dl = b.peek("q", true, 10).unwrap();
        assert_eq!(
            dl[0].dead_letter_reason.as_deref(),
            Some("MaxDeliveryCountExceeded")
        );
        assert_eq!(b.resubmit_dead_letters("q").unwrap(), 1);
        assert_eq!(b.receive("q").unwrap().unwrap().delivery_count, 1);
    }

    #[test]
    fn a_second_message_with_the_same_id_inside_the_window_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        let m = Outgoing {
            message_id: Some("m1".into()),
            ..body("a")
        };
        assert!(matches!(
            b.send(&Target::Queue("q".into()), m.clone()).unwrap(),
            SendOutcome::Accepted(_)
        ));
        assert_eq!(
            b.send(&Target::Queue("q".into()), m).unwrap(),
            SendOutcome::Duplicate
        );
        assert_eq!(b.list().unwrap()[0].active, 1);
    }

    #[test]
    fn a_scheduled_message_is_invisible_until_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        let later = Utc::now() + chrono::Duration::hours(1);
        b.send(
            &Target::Queue("q".into()),
            Outgoing {
                scheduled_enqueue_time: Some(later),
                ..body("a")
            },
        )
        .unwrap();
        assert!(b.receive("q").unwrap().is_none());
        assert_eq!(b.list().unwrap()[0].scheduled, 1);
    }

    #[test]
    fn a_topic_message_reaches_every_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let b = bus(&dir, 10);
        b.ensure_subscription("t", "s1").unwrap();
        b.ensure_subscription("t", "s2").unwrap();
        b.send(&Target::Topic("t".into()), body("x")).unwrap();
        assert!(b.receive("t/Subscriptions/s1").unwrap().is_some());
        assert!(b.receive("t/Subscriptions/s2").unwrap().is_some());
    }

    #[test]
    fn messages_survive_reopening_and_stale_locks_are_released() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = bus(&dir, 10);
            b.send(&Target::Queue("q".into()), body("a")).unwrap();
            assert!(b.receive("q").unwrap().is_some());
        }
        let b = bus(&dir, 10);
        assert!(b.receive("q").unwrap().is_none());
        assert_eq!(b.release_all_locks().unwrap(), 1);
        assert_eq!(b.receive("q").unwrap().unwrap().delivery_count, 2);
    }
}
