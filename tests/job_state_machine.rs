//! Model-based property test of the job store: random sequences of what workers,
//! processes and operators do — enqueue (with de-duplication keys), claim (oldest-first
//! and fair), acknowledge (outcome decided by the runner's own `Verdict::of` from a
//! policy), cancel, replay (also both at once: an operator restarting a job), a worker
//! restarting, dying (and the orphan check), coming back after looking dead, or
//! draining on SIGTERM — run against the real store functions on a real database. After
//! every step the `jobs` table is read back and checked twice:
//!
//! 1. against invariants that need no model, only what the test saw happen: no job is
//!    lost or duplicated, a terminal state changes only by replay, `attempt <=
//!    max_attempts`, recoveries stay under their limit (reaching it discards), a claim
//!    never returns a job a live worker is running, each claim of a job has a later
//!    claim time than the one before, a job is claimed again only after a
//!    retry/snooze, a take-back, a hand-back or a replay, an orphan check never takes a
//!    job from a live worker, a de-duplication key is blocked exactly while a
//!    non-cancelled job holds it, each statement changes only the rows it is about (an
//!    acknowledgement or a hand-back only a job still running under the claim it
//!    names);
//! 2. against a small in-memory model of every row (state, attempt, recoveries, due or
//!    not, lock holder and claim time, de-duplication key), of what each claim may
//!    return (oldest first: every due job up to the limit; fair: the keys after the
//!    worker's pivot, an equal share each), and of the number of attempt-history and
//!    operator rows.
//!
//! Every claim the model makes remembers its claim time (`Claimed::claimed_at`), and
//! its acknowledgement or hand-back presents it: one of a stale claim (the job was
//! cancelled, taken back or handed back since, and maybe claimed again by the same
//! worker) must change nothing, though an acknowledgement still adds a history row.
//!
//! Delays are 0 or an hour, so nothing sleeps: a job due in an hour must not be
//! claimable, one due now must be. `PROPTEST_CASES=n` runs more cases than the 40.
//! Bugs it found are at the end as regression tests of their shortest sequences.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    time::Duration,
};

use chrono::{DateTime, Utc};
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestCaseError, TestRunner},
};
use sqlx::PgPool;
use syncline_jobs::core::{
    JobError, RetryPolicy,
    runner::Verdict,
    store::{
        JobState,
        operator::{self, Action, Filter},
        queue::{self, NewJob},
        worker::{self, AttemptOutcome, ClaimRules, Finished},
    },
};

/// The two queues: oldest-first claims, and fair claims round robin over `fair_key`.
const QUEUES: [&str; 2] = ["sm.plain", "sm.fair"];
const FAIR_QUEUE: usize = 1;
const FAIR_KEYS: [&str; 3] = ["a", "b", "c"];
const DEDUPE_KEYS: [&str; 2] = ["k0", "k1"];
const PROCESSES: u8 = 2;
const HOUR: Duration = Duration::from_secs(3600);
/// Workers heart-beat at the start of a case and a case lasts well under this, so only
/// workers the test killed look dead to an orphan check.
const ORPHAN_WINDOW: Duration = Duration::from_secs(60);
/// Retries are due at once unless the error asks for an hour (`retry_after`).
const NO_DELAY: &[Duration] = &[Duration::ZERO];

// ---------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Worker {
    process: u8,
    queue: usize,
}

impl Worker {
    fn name(self) -> String {
        format!("p{}:{}", self.process, QUEUES[self.queue])
    }

    fn slot(self) -> usize {
        usize::from(self.process) * QUEUES.len() + self.queue
    }

    fn all() -> impl Iterator<Item = Worker> {
        (0..PROCESSES)
            .flat_map(|process| (0..QUEUES.len()).map(move |queue| Worker { process, queue }))
    }
}

/// What a finished attempt came to, before the runner's verdict.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Ok,
    /// A retryable error; `later` asks for an hour (`retry_after`), else the policy's 0.
    Retryable {
        later: bool,
    },
    /// The handler panicked: the runner turns it into a retryable error.
    Panic,
    Snooze {
        later: bool,
    },
    Permanent,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: usize,
        dedupe: Option<usize>,
        fair_key: usize,
        in_an_hour: bool,
    },
    /// A claim by a live worker, picked among those with due jobs when there are any.
    Claim { worker: Index, limit: usize },
    /// Acknowledge one attempt not yet acknowledged (picked among all of them: also
    /// attempts whose job was cancelled, or taken back from their worker meanwhile).
    Finish { attempt: Index, result: Ending },
    /// Cancel: picked among jobs not yet ended when there are any (among running jobs,
    /// when `running` and there are any: their attempts go on, and answer late).
    Cancel { job: Index, running: bool },
    /// Replay: picked among terminal jobs when there are any (among cancelled jobs whose
    /// de-duplication key another job took since, when `contested` and there are any).
    Replay { job: Index, contested: bool },
    /// An operator restarts a job (running, when there are any): cancels it, then
    /// replays it. A running attempt goes on, and its worker may claim the job again.
    CancelReplay { job: Index },
    /// The worker starts again under its name: registers (heartbeat) and takes back what
    /// it held (and what dead workers held).
    Restart { worker: Worker },
    /// A worker whose process was cut off (and so looked dead) is reachable again: its
    /// heartbeat resumes, nothing is taken back, and the attempts it was running go on.
    Reconnect { worker: Worker },
    /// The worker stops heart-beating: its row is removed (`retire`) or goes stale.
    Die { worker: Worker, retire: bool },
    /// Some live process's heartbeat: keeps its workers alive, takes back dead workers' jobs.
    OrphanCheck,
    /// SIGTERM: a live worker with claims in flight hands back those it has not started
    /// (a subset, chosen by the mask; some may be stale: their job was cancelled, taken
    /// back or claimed again since).
    Drain { worker: Index, mask: u8 },
}

fn worker_strategy() -> impl Strategy<Value = Worker> {
    (0..PROCESSES, 0..QUEUES.len()).prop_map(|(process, queue)| Worker { process, queue })
}

fn result_strategy() -> impl Strategy<Value = Ending> {
    prop_oneof![
        3 => Just(Ending::Ok),
        2 => any::<bool>().prop_map(|later| Ending::Retryable { later }),
        1 => Just(Ending::Panic),
        1 => any::<bool>().prop_map(|later| Ending::Snooze { later }),
        1 => Just(Ending::Permanent),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..QUEUES.len(), proptest::option::weighted(0.7, 0..DEDUPE_KEYS.len()), 0..FAIR_KEYS.len(),
              proptest::bool::weighted(0.2))
            .prop_map(|(queue, dedupe, fair_key, in_an_hour)| Op::Enqueue { queue, dedupe, fair_key, in_an_hour }),
        6 => (any::<Index>(), prop_oneof![3 => 1usize..=3, 1 => Just(8)])
            .prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        6 => (any::<Index>(), result_strategy()).prop_map(|(attempt, result)| Op::Finish { attempt, result }),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(job, running)| Op::Cancel { job, running }),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(job, contested)| Op::Replay { job, contested }),
        1 => any::<Index>().prop_map(|job| Op::CancelReplay { job }),
        1 => worker_strategy().prop_map(|worker| Op::Restart { worker }),
        1 => worker_strategy().prop_map(|worker| Op::Reconnect { worker }),
        1 => (worker_strategy(), any::<bool>()).prop_map(|(worker, retire)| Op::Die { worker, retire }),
        1 => Just(Op::OrphanCheck),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(worker, mask)| Op::Drain { worker, mask }),
    ]
}

/// Per case: the attempt budget jobs are enqueued with, the job kind's policy budget
/// (which `Verdict::of` goes by; usually the same, but a row's budget may differ after
/// an upgrade, and the row's decides), the crash-recovery limit, and whether each queue
/// releases de-duplication keys as jobs start.
#[derive(Debug, Clone, Copy)]
struct Params {
    max_attempts: u32,
    policy_attempts: u32,
    max_recoveries: u32,
    release_dedupe: [bool; 2],
}

fn params_strategy() -> impl Strategy<Value = Params> {
    (
        1u32..=3,
        prop_oneof![3 => Just(None), 1 => (1u32..=4).prop_map(Some)],
        1u32..=3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, policy, r, p, f)| Params {
            max_attempts: a,
            policy_attempts: policy.unwrap_or(a),
            max_recoveries: r,
            release_dedupe: [p, f],
        })
}

// ---------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct MJob {
    id: String,
    queue: usize,
    state: JobState,
    attempt: i32,
    max_attempts: i32,
    recoveries: i32,
    due: bool,
    locked_by: Option<String>,
    /// The claim time of the claim in `locked_by` (kept, like it, on a completed job).
    locked_at: Option<DateTime<Utc>>,
    dedupe_key: Option<String>,
    fair_key: Option<String>,
    /// The claim (token) whose attempt currently owns the job.
    holder: Option<u64>,
}

/// A claimed attempt not yet acknowledged (nor handed back).
#[derive(Debug, Clone)]
struct InFlight {
    token: u64,
    job: usize,
    worker: Worker,
    attempt: i32,
    /// What the claim returned as `claimed_at`: its acknowledgement and hand-back name it.
    claimed_at: DateTime<Utc>,
}

/// A row as read back.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Row {
    id: String,
    queue: String,
    state: JobState,
    attempt: i32,
    max_attempts: i32,
    recoveries: i32,
    due: bool,
    locked_by: Option<String>,
    locked_at: Option<DateTime<Utc>>,
    dedupe_key: Option<String>,
    fair_key: Option<String>,
}

/// (state, attempt, recoveries, due, locked_by, locked_at, dedupe_key)
type Core<'a> = (
    JobState,
    i32,
    i32,
    bool,
    Option<&'a str>,
    Option<DateTime<Utc>>,
    Option<&'a str>,
);

impl Row {
    fn core(&self) -> Core<'_> {
        (
            self.state,
            self.attempt,
            self.recoveries,
            self.due,
            self.locked_by.as_deref(),
            self.locked_at,
            self.dedupe_key.as_deref(),
        )
    }
}

/// What a step did, as the model-free checks need it.
#[derive(Debug)]
enum Effect {
    Nothing,
    Enqueued {
        id: Option<String>,
        queue: usize,
        key: Option<String>,
    },
    Claimed {
        worker: Worker,
        ids: Vec<String>,
        /// Each claimed job's claim time, as the claim returned it.
        claimed_at: Vec<DateTime<Utc>>,
    },
    /// An acknowledgement under the claim (worker, claim time) it names.
    Acked {
        id: String,
        worker: String,
        claimed_at: DateTime<Utc>,
    },
    Cancelled {
        id: String,
    },
    Replayed {
        id: String,
    },
    TookBack,
    /// A hand-back by `worker` of the claims (id, claim time) it names.
    HandedBack {
        worker: String,
        claims: Vec<(String, DateTime<Utc>)>,
    },
}

struct Harness<'a> {
    pool: &'a PgPool,
    params: Params,
    policy: RetryPolicy,
    jobs: Vec<MJob>,
    by_id: HashMap<String, usize>,
    inflight: Vec<InFlight>,
    alive: Vec<bool>,
    pivot: Vec<String>,
    cursors: Vec<worker::Cursor>,
    next_token: u64,
    history_rows: i64,
    operator_rows: i64,
    // Model-free bookkeeping, from what was observed.
    prev: BTreeMap<String, Row>,
    /// Jobs that may be claimed (again): enqueued, or since their last claim finished
    /// with retry/snooze, taken back, handed back or replayed.
    may_run: HashMap<String, bool>,
    /// Claims (token, worker) still running each job on a live worker.
    live: HashMap<String, Vec<(u64, Worker)>>,
    /// The claim time of each job's latest claim: the next must be later.
    last_claimed_at: HashMap<String, DateTime<Utc>>,
    log: String,
    /// How often each interesting thing happened (to see what the cases cover).
    seen: BTreeMap<&'static str, usize>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn db(e: sqlx::Error) -> String {
    format!("database error: {e}")
}

impl<'a> Harness<'a> {
    async fn new(pool: &'a PgPool, params: Params) -> Result<Self, String> {
        // DELETE, not TRUNCATE: a handful of rows go in microseconds, where TRUNCATE
        // makes new files for four tables and their indexes (~150 ms a case).
        sqlx::raw_sql(
            "DELETE FROM jobs; DELETE FROM job_attempts; DELETE FROM job_workers;
             DELETE FROM job_operator_actions;",
        )
        .execute(pool)
        .await
        .map_err(db)?;
        let all: Vec<(String, &'static str)> =
            Worker::all().map(|w| (w.name(), QUEUES[w.queue])).collect();
        worker::heartbeat(pool, &all).await.map_err(db)?;
        let slots = Worker::all().count();
        Ok(Self {
            pool,
            params,
            policy: RetryPolicy {
                delays: NO_DELAY,
                max_attempts: params.policy_attempts,
            },
            jobs: Vec::new(),
            by_id: HashMap::new(),
            inflight: Vec::new(),
            alive: vec![true; slots],
            pivot: vec![String::new(); slots],
            cursors: vec![worker::Cursor::default(); slots],
            next_token: 0,
            history_rows: 0,
            operator_rows: 0,
            prev: BTreeMap::new(),
            may_run: HashMap::new(),
            live: HashMap::new(),
            last_claimed_at: HashMap::new(),
            log: String::new(),
            seen: BTreeMap::new(),
        })
    }

    fn name(&self, id: &str) -> String {
        self.by_id
            .get(id)
            .map_or_else(|| format!("<unknown {id}>"), |i| format!("#{i}"))
    }

    fn names(&self, ids: &[String]) -> String {
        ids.iter()
            .map(|id| self.name(id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn note(&mut self, text: String) {
        let _ = writeln!(self.log, "  {text}");
    }

    fn saw(&mut self, what: &'static str, n: usize) {
        if n > 0 {
            *self.seen.entry(what).or_default() += n;
        }
    }

    fn claimable(&self, j: &MJob) -> bool {
        j.state.is_waiting() && j.due
    }

    /// Runs one operation, then checks the table.
    async fn step(&mut self, op: &Op) -> Check {
        let effect = match *op {
            Op::Enqueue {
                queue,
                dedupe,
                fair_key,
                in_an_hour,
            } => self.enqueue(queue, dedupe, fair_key, in_an_hour).await?,
            Op::Claim { worker, limit } => self.claim(worker, limit).await?,
            Op::Finish { attempt, result } => self.finish(attempt, result).await?,
            Op::Cancel { job, running } => self.cancel(job, running).await?,
            Op::Replay { job, contested } => self.replay(job, contested).await?,
            Op::CancelReplay { job } => {
                let cancelled = self.cancel(job, true).await?;
                self.check(&cancelled).await?;
                let Effect::Cancelled { id } = cancelled else {
                    return Ok(());
                };
                self.replay_job(self.by_id[&id]).await?
            }
            Op::Restart { worker } => self.restart(worker).await?,
            Op::Reconnect { worker } => self.reconnect(worker).await?,
            Op::Die { worker, retire } => self.die(worker, retire).await?,
            Op::OrphanCheck => self.orphan_check().await?,
            Op::Drain { worker, mask } => self.drain(worker, mask).await?,
        };
        self.check(&effect).await
    }

    async fn enqueue(
        &mut self,
        queue: usize,
        dedupe: Option<usize>,
        fair_key: usize,
        in_an_hour: bool,
    ) -> Result<Effect, String> {
        let key = dedupe.map(|k| DEDUPE_KEYS[k]);
        let fair = (queue == FAIR_QUEUE).then_some(FAIR_KEYS[fair_key]);
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let id = queue::insert(
            &mut conn,
            NewJob {
                queue: QUEUES[queue],
                payload: br#"{"v":1,"payload":null}"#,
                max_attempts: self.params.max_attempts,
                run_at: in_an_hour.then(|| Utc::now() + HOUR),
                dedupe_key: key,
                fair_key: fair,
                wakeup: "trigger",
            },
        )
        .await
        .map_err(db)?;
        drop(conn);
        let blocked_by = key.and_then(|k| {
            self.jobs.iter().position(|j| {
                j.queue == queue
                    && j.dedupe_key.as_deref() == Some(k)
                    && j.state != JobState::Cancelled
            })
        });
        match (&id, blocked_by) {
            (None, Some(holder)) => {
                self.saw("duplicate enqueue refused", 1);
                self.note(format!(
                    "enqueue {} key {key:?}: duplicate of #{holder}",
                    QUEUES[queue]
                ));
            }
            (Some(id), None) => {
                self.saw("enqueued", 1);
                if key.is_some_and(|k| {
                    self.jobs
                        .iter()
                        .any(|j| j.queue == queue && j.dedupe_key.as_deref() == Some(k))
                }) {
                    self.saw("enqueue with a key a cancelled job had", 1);
                }
                let index = self.jobs.len();
                self.by_id.insert(id.clone(), index);
                self.jobs.push(MJob {
                    id: id.clone(),
                    queue,
                    state: if in_an_hour {
                        JobState::Scheduled
                    } else {
                        JobState::Available
                    },
                    attempt: 0,
                    max_attempts: self.params.max_attempts as i32,
                    recoveries: 0,
                    due: !in_an_hour,
                    locked_by: None,
                    locked_at: None,
                    dedupe_key: key.map(str::to_owned),
                    fair_key: fair.map(str::to_owned),
                    holder: None,
                });
                self.note(format!(
                    "enqueue {} key {key:?} fair {fair:?}{} -> #{index}",
                    QUEUES[queue],
                    if in_an_hour { " in an hour" } else { "" }
                ));
            }
            (None, None) => {
                return Err(format!(
                    "enqueue {} with key {key:?} was refused as a duplicate, but no \
                     non-cancelled job holds that key",
                    QUEUES[queue]
                ));
            }
            (Some(id), Some(holder)) => {
                return Err(format!(
                    "enqueue {} with key {key:?} made a new job {id}, but #{holder} ({:?}) \
                     holds the key",
                    QUEUES[queue], self.jobs[holder].state
                ));
            }
        }
        Ok(Effect::Enqueued {
            id,
            queue,
            key: key.map(str::to_owned),
        })
    }

    async fn claim(&mut self, pick: Index, limit: usize) -> Result<Effect, String> {
        // Dead workers claim nothing.
        let alive: Vec<Worker> = Worker::all().filter(|w| self.alive[w.slot()]).collect();
        let busy: Vec<Worker> = alive
            .iter()
            .copied()
            .filter(|w| {
                self.jobs
                    .iter()
                    .any(|j| j.queue == w.queue && self.claimable(j))
            })
            .collect();
        let candidates = if busy.is_empty() { alive } else { busy };
        if candidates.is_empty() {
            return Ok(Effect::Nothing);
        }
        let worker = candidates[pick.index(candidates.len())];
        let fair = worker.queue == FAIR_QUEUE;
        let rules = ClaimRules {
            release_dedupe_key: self.params.release_dedupe[worker.queue],
            fair,
        };
        let pivot = self.pivot[worker.slot()].clone();
        // Fair claims keep the worker's cursor (its pivot evolves as the model's does);
        // oldest-first claims start from the beginning, so the model can say exactly
        // which jobs they take.
        let mut from_start = worker::Cursor::default();
        let cursor = if fair {
            &mut self.cursors[worker.slot()]
        } else {
            &mut from_start
        };
        let claimed = worker::claim(
            self.pool,
            &worker.name(),
            QUEUES[worker.queue],
            limit,
            rules,
            cursor,
        )
        .await
        .map_err(db)?;
        let ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
        self.note(format!(
            "claim by {} limit {limit}{} -> [{}]",
            worker.name(),
            if fair {
                format!(" pivot {pivot:?}")
            } else {
                String::new()
            },
            self.names(&ids)
        ));

        // What the model says a claim may return.
        let claimable: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].queue == worker.queue && self.claimable(&self.jobs[i]))
            .collect();
        let mut seen = HashSet::new();
        for c in &claimed {
            ensure!(
                seen.insert(c.id.clone()),
                "claim returned {} twice",
                self.name(&c.id)
            );
            let i = *self
                .by_id
                .get(&c.id)
                .ok_or_else(|| format!("claim returned a job never enqueued: {}", c.id))?;
            ensure!(
                claimable.contains(&i),
                "claim returned #{i}, which is not claimable (model: {:?}, due {})",
                self.jobs[i].state,
                self.jobs[i].due
            );
            ensure!(
                c.attempt == self.jobs[i].attempt + 1
                    && c.max_attempts == self.jobs[i].max_attempts,
                "claim of #{i} says attempt {}/{}, model {}/{}",
                c.attempt,
                c.max_attempts,
                self.jobs[i].attempt + 1,
                self.jobs[i].max_attempts
            );
        }
        if fair {
            // Round robin: the due keys after the pivot, wrapping round, at most `limit`
            // of them; an equal share of the batch from each.
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for &i in &claimable {
                *counts
                    .entry(self.jobs[i].fair_key.as_deref().unwrap_or(""))
                    .or_default() += 1;
            }
            let order: Vec<&str> = counts
                .keys()
                .copied()
                .filter(|k| *k > pivot.as_str())
                .chain(counts.keys().copied().filter(|k| *k <= pivot.as_str()))
                .take(limit)
                .collect();
            let share = if order.is_empty() {
                0
            } else {
                limit.div_ceil(order.len()).max(1)
            };
            let expected = order
                .iter()
                .map(|k| counts[k].min(share))
                .sum::<usize>()
                .min(limit);
            ensure!(
                claimed.len() == expected,
                "fair claim (limit {limit}, pivot {pivot:?}, due per key {counts:?}) returned {} \
                 jobs, expected {expected}",
                claimed.len()
            );
            let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
            for c in &claimed {
                let key = c.fair_key.as_deref().unwrap_or("");
                ensure!(
                    order.contains(&key),
                    "fair claim served key {key:?}, not among {order:?}"
                );
                *per_key.entry(key).or_default() += 1;
            }
            ensure!(
                per_key.values().all(|&n| n <= share),
                "fair claim took more than its share {share} from a key: {per_key:?}"
            );
            if let Some(last) = claimed.iter().filter_map(|c| c.fair_key.clone()).max() {
                self.pivot[worker.slot()] = last;
            }
        } else {
            let expected = claimable.len().min(limit);
            ensure!(
                claimed.len() == expected,
                "claim (limit {limit}) returned {} jobs while {} were claimable",
                claimed.len(),
                claimable.len()
            );
        }

        // Never on two live workers at once.
        for id in &ids {
            let running = self.live.get(id).cloned().unwrap_or_default();
            ensure!(
                running.is_empty(),
                "{} was handed to {} while {:?} still runs it",
                self.name(id),
                worker.name(),
                running
                    .iter()
                    .map(|(t, w)| (format!("claim {t}"), w.name()))
                    .collect::<Vec<_>>()
            );
        }

        self.saw("jobs claimed", claimed.len());
        self.saw(
            "jobs claimed again",
            claimed.iter().filter(|c| c.attempt > 1).count(),
        );
        for c in &claimed {
            let i = self.by_id[&c.id];
            let token = self.next_token;
            self.next_token += 1;
            let release = self.params.release_dedupe[worker.queue];
            let job = &mut self.jobs[i];
            job.state = JobState::Running;
            job.attempt += 1;
            job.locked_by = Some(worker.name());
            job.locked_at = Some(c.claimed_at);
            job.holder = Some(token);
            if release {
                job.dedupe_key = None;
            }
            self.inflight.push(InFlight {
                token,
                job: i,
                worker,
                attempt: c.attempt,
                claimed_at: c.claimed_at,
            });
            self.live
                .entry(c.id.clone())
                .or_default()
                .push((token, worker));
        }
        let claimed_at = claimed.iter().map(|c| c.claimed_at).collect();
        Ok(Effect::Claimed {
            worker,
            ids,
            claimed_at,
        })
    }

    async fn finish(&mut self, pick: Index, result: Ending) -> Result<Effect, String> {
        if self.inflight.is_empty() {
            return Ok(Effect::Nothing);
        }
        let n = pick.index(self.inflight.len());
        let a = self.inflight[n].clone();
        self.inflight.remove(n);
        let job = &self.jobs[a.job];
        // Only the claim that owns the job changes it; a late result (of a claim whose job
        // was cancelled, taken back or claimed again since) is only recorded.
        let owns = job.holder == Some(a.token);
        // The late result the store used to apply: its worker claimed the job again.
        let newer_claim_same_worker = !owns
            && job.state == JobState::Running
            && job.locked_by.as_deref() == Some(a.worker.name().as_str());

        let error = match result {
            Ending::Ok => Ok(()),
            Ending::Retryable { later } => Err(JobError::retry_after(
                "partner said 503",
                later.then_some(HOUR),
            )),
            Ending::Panic => Err(JobError::retryable("the job panicked: boom")),
            Ending::Snooze { later } => {
                Err(JobError::snooze(if later { HOUR } else { Duration::ZERO }))
            }
            Ending::Permanent => Err(JobError::permanent("HTTP 400")),
        };
        let verdict = Verdict::of(error, a.attempt as u32, &self.policy, 1.0);
        let now = Utc::now();
        worker::acknowledge(
            self.pool,
            &[Finished {
                job_id: job.id.clone(),
                queue: QUEUES[job.queue],
                worker: a.worker.name(),
                claimed_at: a.claimed_at,
                attempt: a.attempt,
                outcome: verdict.outcome,
                run_in: verdict.run_in,
                error: verdict.error.clone(),
                started_at: now,
                finished_at: now,
            }],
        )
        .await
        .map_err(db)?;
        self.history_rows += 1;
        let id = job.id.clone();
        self.note(format!(
            "ack #{} attempt {} by {} ({result:?} -> {:?} in {:?}){}",
            a.job,
            a.attempt,
            a.worker.name(),
            verdict.outcome,
            verdict.run_in,
            if owns {
                ""
            } else if newer_claim_same_worker {
                " [late: its worker claimed the job again since]"
            } else {
                " [late: the attempt no longer owns the job]"
            }
        ));
        if let Some(holders) = self.live.get_mut(&id) {
            holders.retain(|(t, _)| *t != a.token);
        }
        self.saw(
            if owns {
                "acks"
            } else if newer_claim_same_worker {
                "late acks under a newer claim of the same worker (no effect)"
            } else {
                "late acks (no effect)"
            },
            1,
        );
        if owns {
            let job = &mut self.jobs[a.job];
            job.holder = None;
            // The row's budget decides a retry: past it, the job is discarded.
            let state = match verdict.outcome.next_state() {
                JobState::Retryable if job.attempt >= job.max_attempts => JobState::Discarded,
                state => state,
            };
            job.state = state;
            let what = match state {
                JobState::Discarded if verdict.outcome == AttemptOutcome::RetryScheduled => {
                    "ack: retry past the row's budget, discarded"
                }
                JobState::Discarded => "ack: discarded",
                JobState::Completed => "ack: completed",
                JobState::Retryable => "ack: retry",
                _ => "ack: snoozed",
            };
            *self.seen.entry(what).or_default() += 1;
            // A completed job keeps its worker (and claim time) as the record of its
            // last attempt, instead of a history row.
            if state != JobState::Completed {
                job.locked_by = None;
                job.locked_at = None;
            }
            if matches!(state, JobState::Retryable | JobState::Scheduled) {
                job.due = verdict.run_in == Some(Duration::ZERO);
            }
            if verdict.outcome == AttemptOutcome::Snoozed {
                job.attempt -= 1;
            }
            if state == JobState::Completed {
                self.history_rows -= 1;
            }
        }
        Ok(Effect::Acked {
            id,
            worker: a.worker.name(),
            claimed_at: a.claimed_at,
        })
    }

    async fn cancel(&mut self, pick: Index, running: bool) -> Result<Effect, String> {
        if self.jobs.is_empty() {
            return Ok(Effect::Nothing);
        }
        let open: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| !self.jobs[i].state.is_terminal())
            .collect();
        let running: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| running && self.jobs[i].state == JobState::Running)
            .collect();
        let i = if !running.is_empty() {
            running[pick.index(running.len())]
        } else if open.is_empty() {
            pick.index(self.jobs.len())
        } else {
            open[pick.index(open.len())]
        };
        let id = self.jobs[i].id.clone();
        let filter = Filter {
            ids: vec![id.clone()],
            ..Filter::default()
        };
        let touched = operator::apply(self.pool, &filter, Action::Cancel, "test")
            .await
            .map_err(db)?;
        let state = self.jobs[i].state;
        let expected = state.is_waiting() || state == JobState::Running;
        self.note(format!(
            "cancel #{i} ({state:?}) -> touched {}",
            touched.len()
        ));
        ensure!(
            touched == if expected { vec![id.clone()] } else { vec![] },
            "cancel of #{i} in state {state:?} touched {touched:?}"
        );
        if expected {
            // A running attempt goes on, but its result no longer changes the job.
            self.saw(
                if state == JobState::Running {
                    "cancelled while running"
                } else {
                    "cancelled while waiting"
                },
                1,
            );
            let job = &mut self.jobs[i];
            job.state = JobState::Cancelled;
            job.holder = None;
            self.operator_rows += 1;
            self.live.remove(&id);
        }
        Ok(Effect::Cancelled { id })
    }

    /// Whether job `i` is cancelled and another job took its de-duplication key since.
    fn key_taken(&self, i: usize) -> bool {
        let job = &self.jobs[i];
        job.state == JobState::Cancelled
            && job.dedupe_key.as_ref().is_some_and(|k| {
                self.jobs.iter().any(|o| {
                    o.id != job.id
                        && o.queue == job.queue
                        && o.dedupe_key.as_ref() == Some(k)
                        && o.state != JobState::Cancelled
                })
            })
    }

    async fn replay(&mut self, pick: Index, contested: bool) -> Result<Effect, String> {
        let terminal: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                matches!(
                    self.jobs[i].state,
                    JobState::Cancelled | JobState::Discarded
                )
            })
            .collect();
        let taken: Vec<usize> = terminal
            .iter()
            .copied()
            .filter(|&i| contested && self.key_taken(i))
            .collect();
        let i = if !taken.is_empty() {
            taken[pick.index(taken.len())]
        } else if !terminal.is_empty() {
            terminal[pick.index(terminal.len())]
        } else if !self.jobs.is_empty() {
            pick.index(self.jobs.len())
        } else {
            return Ok(Effect::Nothing);
        };
        self.replay_job(i).await
    }

    async fn replay_job(&mut self, i: usize) -> Result<Effect, String> {
        let id = self.jobs[i].id.clone();
        let filter = Filter {
            ids: vec![id.clone()],
            ..Filter::default()
        };
        let touched = operator::apply(self.pool, &filter, Action::Replay, "test")
            .await
            .map_err(db)?;
        let state = self.jobs[i].state;
        let replayable = matches!(state, JobState::Cancelled | JobState::Discarded);
        // Cancelling released the key; another job may have taken it since.
        let key_taken = self.key_taken(i);
        self.note(format!(
            "replay #{i} ({state:?}{}) -> touched {}",
            if key_taken { ", its key taken" } else { "" },
            touched.len()
        ));
        ensure!(
            touched == if replayable { vec![id.clone()] } else { vec![] },
            "replay of #{i} in state {state:?} touched {touched:?}"
        );
        if replayable {
            self.saw("replayed", 1);
            self.saw(
                "replayed: cancelled, its key taken by another job",
                key_taken.into(),
            );
            let job = &mut self.jobs[i];
            // A cancelled job released its key and runs again without it; a discarded
            // job still held its key and keeps it.
            if state == JobState::Cancelled {
                job.dedupe_key = None;
            }
            job.state = JobState::Available;
            job.attempt = 0;
            job.recoveries = 0;
            job.due = true;
            job.locked_by = None;
            job.locked_at = None;
            job.holder = None;
            self.operator_rows += 1;
        }
        Ok(Effect::Replayed { id })
    }

    /// The model's take-back: running jobs whose worker is `restarted` or dead.
    fn take_back_in_model(&mut self, restarted: Option<Worker>) -> Vec<String> {
        let restarted = restarted.map(Worker::name);
        let dead: HashSet<String> = Worker::all()
            .filter(|w| !self.alive[w.slot()])
            .map(Worker::name)
            .collect();
        let mut queues = Vec::new();
        let mut taken = Vec::new();
        for (i, job) in self.jobs.iter_mut().enumerate() {
            let Some(holder) = job.locked_by.clone() else {
                continue;
            };
            if job.state != JobState::Running
                || !(Some(&holder) == restarted.as_ref() || dead.contains(&holder))
            {
                continue;
            }
            job.recoveries += 1;
            job.locked_by = None;
            job.locked_at = None;
            job.holder = None;
            job.due = true;
            if job.recoveries >= self.params.max_recoveries as i32
                || job.attempt >= job.max_attempts
            {
                job.state = JobState::Discarded;
            } else {
                job.state = JobState::Retryable;
                queues.push(QUEUES[job.queue].to_owned());
            }
            self.history_rows += 1;
            *self
                .seen
                .entry(if job.state == JobState::Retryable {
                    "taken back"
                } else if job.recoveries >= self.params.max_recoveries as i32 {
                    "taken back: recovery limit, discarded"
                } else {
                    "taken back: budget spent, discarded"
                })
                .or_default() += 1;
            taken.push(format!("#{i} -> {:?}", job.state));
        }
        self.note(format!("  took back [{}]", taken.join(", ")));
        queues.sort();
        queues.dedup();
        queues
    }

    async fn reconnect(&mut self, worker: Worker) -> Result<Effect, String> {
        if self.alive[worker.slot()] {
            return Ok(Effect::Nothing);
        }
        worker::heartbeat(self.pool, &[(worker.name(), QUEUES[worker.queue])])
            .await
            .map_err(db)?;
        self.note(format!("{} reconnects", worker.name()));
        self.alive[worker.slot()] = true;
        // What it was running and still holds (not taken back meanwhile) is live again.
        for a in &self.inflight {
            let job = &self.jobs[a.job];
            if a.worker == worker && job.holder == Some(a.token) {
                self.live
                    .entry(job.id.clone())
                    .or_default()
                    .push((a.token, worker));
            }
        }
        Ok(Effect::Nothing)
    }

    async fn restart(&mut self, worker: Worker) -> Result<Effect, String> {
        // What `JobStore::register` does.
        worker::heartbeat(self.pool, &[(worker.name(), QUEUES[worker.queue])])
            .await
            .map_err(db)?;
        let mut queues = worker::take_back_orphans(
            self.pool,
            ORPHAN_WINDOW,
            self.params.max_recoveries,
            Some(&worker.name()),
        )
        .await
        .map_err(db)?;
        queues.sort();
        self.note(format!("restart {}", worker.name()));
        self.alive[worker.slot()] = true;
        self.pivot[worker.slot()] = String::new();
        self.cursors[worker.slot()] = worker::Cursor::default();
        // The earlier run is gone: its attempts hold nothing any more.
        for holders in self.live.values_mut() {
            holders.retain(|(_, w)| *w != worker);
        }
        let expected = self.take_back_in_model(Some(worker));
        ensure!(
            queues == expected,
            "take-back on restart reported queues {queues:?}, expected {expected:?}"
        );
        Ok(Effect::TookBack)
    }

    async fn die(&mut self, worker: Worker, retire: bool) -> Result<Effect, String> {
        if retire {
            worker::retire(self.pool, &[worker.name()])
                .await
                .map_err(db)?;
        } else {
            // Test-only: its last heartbeat was an hour ago.
            sqlx::query(
                "UPDATE job_workers SET last_seen = now() - interval '1 hour' WHERE name = $1",
            )
            .bind(worker.name())
            .execute(self.pool)
            .await
            .map_err(db)?;
        }
        self.note(format!(
            "{} dies ({})",
            worker.name(),
            if retire {
                "row removed"
            } else {
                "heartbeat stale"
            }
        ));
        self.alive[worker.slot()] = false;
        for holders in self.live.values_mut() {
            holders.retain(|(_, w)| *w != worker);
        }
        Ok(Effect::Nothing)
    }

    async fn orphan_check(&mut self) -> Result<Effect, String> {
        let alive: Vec<(String, &'static str)> = Worker::all()
            .filter(|w| self.alive[w.slot()])
            .map(|w| (w.name(), QUEUES[w.queue]))
            .collect();
        worker::heartbeat(self.pool, &alive).await.map_err(db)?;
        let mut queues =
            worker::take_back_orphans(self.pool, ORPHAN_WINDOW, self.params.max_recoveries, None)
                .await
                .map_err(db)?;
        queues.sort();
        self.note("orphan check".to_owned());
        let expected = self.take_back_in_model(None);
        ensure!(
            queues == expected,
            "orphan check reported queues {queues:?}, expected {expected:?}"
        );
        Ok(Effect::TookBack)
    }

    async fn drain(&mut self, pick: Index, mask: u8) -> Result<Effect, String> {
        let holding: Vec<Worker> = Worker::all()
            .filter(|w| self.alive[w.slot()] && self.inflight.iter().any(|a| a.worker == *w))
            .collect();
        if holding.is_empty() {
            return Ok(Effect::Nothing);
        }
        let worker = holding[pick.index(holding.len())];
        // The claims it has not started: a subset of its claims in flight, those that still
        // own their job and stale ones alike.
        let unstarted: Vec<InFlight> = self
            .inflight
            .iter()
            .filter(|a| a.worker == worker)
            .enumerate()
            .filter(|(n, _)| mask & (1 << (n % 8)) != 0)
            .map(|(_, a)| a.clone())
            .collect();
        let claims: Vec<(String, DateTime<Utc>)> = unstarted
            .iter()
            .map(|a| (self.jobs[a.job].id.clone(), a.claimed_at))
            .collect();
        let n = worker::hand_back(self.pool, &worker.name(), &claims)
            .await
            .map_err(db)?;
        // Only a claim that still owns its job gives it back; a stale one changes nothing.
        let owning: Vec<bool> = unstarted
            .iter()
            .map(|a| self.jobs[a.job].holder == Some(a.token))
            .collect();
        let named: Vec<String> = unstarted
            .iter()
            .zip(&owning)
            .map(|(a, &owns)| format!("#{}{}", a.job, if owns { "" } else { " (stale)" }))
            .collect();
        self.note(format!(
            "drain {}: hand back [{}] -> {n}",
            worker.name(),
            named.join(", ")
        ));
        let expected = owning.iter().filter(|&&owns| owns).count();
        ensure!(
            n == expected as u64,
            "hand-back of {} claims, {expected} of them owning their job, changed {n}",
            claims.len()
        );
        self.saw("handed back", expected);
        self.saw("stale hand-backs (no effect)", claims.len() - expected);
        for (a, owns) in unstarted.iter().zip(owning) {
            self.inflight.retain(|x| x.token != a.token);
            let job = &mut self.jobs[a.job];
            if let Some(holders) = self.live.get_mut(&job.id) {
                holders.retain(|(t, _)| *t != a.token);
            }
            if !owns {
                continue;
            }
            job.state = if job.attempt > 1 {
                JobState::Retryable
            } else {
                JobState::Available
            };
            job.attempt -= 1;
            job.locked_by = None;
            job.locked_at = None;
            job.holder = None;
        }
        Ok(Effect::HandedBack {
            worker: worker.name(),
            claims,
        })
    }

    /// Reads the table back; checks the invariants (no model), then the model.
    async fn check(&mut self, effect: &Effect) -> Check {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, queue, state, attempt, max_attempts, recoveries, run_at <= now() AS due,
                    locked_by, locked_at, dedupe_key, fair_key
             FROM jobs ORDER BY id",
        )
        .fetch_all(self.pool)
        .await
        .map_err(db)?;
        let mut now: BTreeMap<String, Row> = BTreeMap::new();
        for row in rows {
            let id = row.id.clone();
            ensure!(
                now.insert(id.clone(), row).is_none(),
                "job {} is in the table twice",
                self.name(&id)
            );
        }

        // --- No job lost, none made up.
        let mut expected_ids: HashSet<&String> = self.prev.keys().collect();
        if let Effect::Enqueued { id: Some(id), .. } = effect {
            expected_ids.insert(id);
        }
        let got_ids: HashSet<&String> = now.keys().collect();
        ensure!(
            got_ids == expected_ids,
            "jobs lost or made up: table has {} jobs, expected {}; missing {:?}, extra {:?}",
            got_ids.len(),
            expected_ids.len(),
            expected_ids.difference(&got_ids).collect::<Vec<_>>(),
            got_ids.difference(&expected_ids).collect::<Vec<_>>()
        );

        // --- Per row: budgets and recoveries.
        for row in now.values() {
            let name = self.name(&row.id);
            ensure!(
                (0..=row.max_attempts).contains(&row.attempt),
                "{name}: attempt {} outside 0..={}",
                row.attempt,
                row.max_attempts
            );
            let limit = self.params.max_recoveries as i32;
            ensure!(
                row.recoveries <= limit
                    && (row.recoveries < limit || row.state == JobState::Discarded),
                "{name}: {} recoveries (limit {limit}) in state {:?}",
                row.recoveries,
                row.state
            );
        }

        // --- De-duplication: blocked exactly while a non-cancelled job holds the key.
        if let Effect::Enqueued {
            id,
            queue,
            key: Some(key),
        } = effect
        {
            let holder = self.prev.values().find(|r| {
                r.queue == QUEUES[*queue]
                    && r.dedupe_key.as_ref() == Some(key)
                    && r.state != JobState::Cancelled
            });
            ensure!(
                id.is_some() == holder.is_none(),
                "enqueue with key {key:?}: made a job: {}, while the key was held by {:?}",
                id.is_some(),
                holder.map(|h| (self.name(&h.id), h.state))
            );
        }

        // --- Each row changed only as the step allows.
        for (id, row) in &now {
            let name = self.name(id);
            let Some(before) = self.prev.get(id) else {
                ensure!(
                    matches!(effect, Effect::Enqueued { .. })
                        && matches!(row.state, JobState::Available | JobState::Scheduled)
                        && row.attempt == 0,
                    "new job {name} in state {:?} attempt {}",
                    row.state,
                    row.attempt
                );
                self.may_run.insert(id.clone(), true);
                continue;
            };
            if before.core() == row.core() {
                continue;
            }
            ensure!(
                !before.state.is_terminal()
                    || matches!(effect, Effect::Replayed { id: r } if r == id),
                "{name} left terminal state {:?} for {:?} without a replay",
                before.state,
                row.state
            );
            let (from, to) = (before.state, row.state);
            use JobState::*;
            let allowed = match effect {
                Effect::Nothing | Effect::Enqueued { .. } => false,
                Effect::Claimed {
                    worker,
                    ids,
                    claimed_at,
                } => ids.iter().zip(claimed_at).any(|(c, at)| {
                    c == id
                        && from.is_waiting()
                        && before.due
                        && to == Running
                        && row.attempt == before.attempt + 1
                        && row.locked_by.as_deref() == Some(worker.name().as_str())
                        && row.locked_at == Some(*at)
                }),
                // Only under the claim it names; a completed job keeps that claim on its
                // row, any other outcome clears it.
                Effect::Acked {
                    id: acked,
                    worker,
                    claimed_at,
                } => {
                    acked == id
                        && from == Running
                        && before.locked_by.as_ref() == Some(worker)
                        && before.locked_at == Some(*claimed_at)
                        && matches!(to, Completed | Retryable | Scheduled | Discarded)
                        && if to == Completed {
                            (row.locked_by.as_ref(), row.locked_at)
                                == (before.locked_by.as_ref(), before.locked_at)
                        } else {
                            row.locked_by.is_none() && row.locked_at.is_none()
                        }
                }
                Effect::Cancelled { id: c } => {
                    c == id && (from.is_waiting() || from == Running) && to == Cancelled
                }
                // A cancelled job released its key and comes back without it; a
                // discarded one still held it and keeps it.
                Effect::Replayed { id: r } => {
                    r == id
                        && matches!(from, Cancelled | Discarded)
                        && to == Available
                        && row.attempt == 0
                        && row.recoveries == 0
                        && row.locked_by.is_none()
                        && row.locked_at.is_none()
                        && row.dedupe_key
                            == if from == Cancelled {
                                None
                            } else {
                                before.dedupe_key.clone()
                            }
                }
                Effect::TookBack => {
                    from == Running
                        && matches!(to, Retryable | Discarded)
                        && row.recoveries == before.recoveries + 1
                        && row.locked_by.is_none()
                        && row.locked_at.is_none()
                }
                // Only a job still running under one of the claims named.
                Effect::HandedBack { worker, claims } => {
                    claims
                        .iter()
                        .any(|(c, at)| c == id && before.locked_at == Some(*at))
                        && before.locked_by.as_ref() == Some(worker)
                        && from == Running
                        && matches!(to, Available | Retryable)
                        && row.attempt == before.attempt - 1
                        && row.locked_by.is_none()
                        && row.locked_at.is_none()
                }
            };
            ensure!(
                allowed,
                "{name} changed {:?} -> {:?} during {effect:?}",
                before.core(),
                row.core()
            );
            if from == Running && to != Running {
                // Ended, given back or taken back: may run again (if not terminal).
                self.may_run.insert(id.clone(), true);
                if matches!(effect, Effect::TookBack) {
                    let holders = self.live.get(id).map_or(0, Vec::len);
                    ensure!(
                        holders == 0,
                        "{name} was taken back from a live worker ({:?})",
                        self.live.get(id)
                    );
                }
            }
            if matches!(effect, Effect::Replayed { .. }) {
                self.may_run.insert(id.clone(), true);
            }
        }

        // --- A claim: a job runs again only when allowed.
        // Each claim of a job is told apart from the earlier ones by a later claim time.
        if let Effect::Claimed {
            ids, claimed_at, ..
        } = effect
        {
            for (id, &at) in ids.iter().zip(claimed_at) {
                let name = self.name(id);
                ensure!(
                    self.may_run.get(id).copied().unwrap_or(false),
                    "{name} was claimed again though its last claim was never finished with \
                     retry/snooze, taken back, handed back or replayed"
                );
                self.may_run.insert(id.clone(), false);
                if let Some(last) = self.last_claimed_at.insert(id.clone(), at) {
                    ensure!(
                        at > last,
                        "{name} was claimed at {at}, not after its previous claim at {last}"
                    );
                }
            }
        }

        // --- The model, row by row, and the history counts.
        for (i, m) in self.jobs.iter().enumerate() {
            let row = &now[&m.id];
            let want = (
                m.state,
                m.attempt,
                m.recoveries,
                m.due,
                m.locked_by.as_deref(),
                m.locked_at,
                m.dedupe_key.as_deref(),
            );
            ensure!(
                row.core() == want
                    && row.max_attempts == m.max_attempts
                    && row.queue == QUEUES[m.queue]
                    && row.fair_key == m.fair_key,
                "#{i}: table has (state, attempt, recoveries, due, locked_by, locked_at, \
                 dedupe_key) = {:?}, model {want:?}",
                row.core()
            );
        }
        let (history, actions): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM job_attempts), (SELECT count(*) FROM job_operator_actions)",
        )
        .fetch_one(self.pool)
        .await
        .map_err(db)?;
        ensure!(
            history == self.history_rows,
            "job_attempts has {history} rows, expected {}",
            self.history_rows
        );
        ensure!(
            actions == self.operator_rows,
            "job_operator_actions has {actions} rows, expected {}",
            self.operator_rows
        );
        self.prev = now;
        Ok(())
    }
}

async fn run_case(
    pool: &PgPool,
    params: Params,
    ops: &[Op],
    totals: &mut BTreeMap<&'static str, usize>,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(pool, params)
        .await
        .map_err(TestCaseError::fail)?;
    for (n, op) in ops.iter().enumerate() {
        if let Err(e) = h.step(op).await {
            return Err(TestCaseError::fail(format!(
                "step {n} ({op:?}) broke the state machine:\n  {e}\n{params:?}\nsteps so far:\n{}",
                h.log
            )));
        }
    }
    if std::env::var("JSM_LOG").is_ok() {
        eprintln!("case {params:?}:\n{}", h.log);
    }
    h.saw("cases", 1);
    h.saw("steps", ops.len());
    for (what, n) in h.seen {
        *totals.entry(what).or_default() += n;
    }
    Ok(())
}

#[test]
fn job_store_follows_its_state_machine() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(common::TestDb::new());
    // The test's own connection; nothing here needs commits to wait for the disk.
    let pool = rt.block_on(async {
        let options: sqlx::postgres::PgConnectOptions = db.url.parse().expect("database URL");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await
            .expect("connect to the test database")
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let totals = std::cell::RefCell::new(BTreeMap::new());
    let strategy = (
        params_strategy(),
        proptest::collection::vec(op_strategy(), 1..=40),
    );
    let result = runner.run(&strategy, |(params, ops)| {
        rt.block_on(run_case(&pool, params, &ops, &mut totals.borrow_mut()))
    });
    let totals = totals.into_inner();
    eprintln!("what the passing cases did: {totals:#?}");
    rt.block_on(async {
        pool.close().await;
        drop(db)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// The bugs the property test found (since fixed), each as its shortest sequence.

async fn put(pool: &PgPool, dedupe_key: Option<&str>) -> Option<String> {
    let mut conn = pool.acquire().await.unwrap();
    queue::insert(
        &mut conn,
        NewJob {
            queue: QUEUES[0],
            payload: b"{}",
            max_attempts: 3,
            run_at: None,
            dedupe_key,
            fair_key: None,
            wakeup: "trigger",
        },
    )
    .await
    .unwrap()
}

async fn take(pool: &PgPool, worker: &str) -> Vec<worker::Claimed> {
    let rules = ClaimRules {
        release_dedupe_key: false,
        fair: false,
    };
    worker::claim(
        pool,
        worker,
        QUEUES[0],
        10,
        rules,
        &mut worker::Cursor::default(),
    )
    .await
    .unwrap()
}

/// What the runner sends for `claim` when the job returned `result`.
async fn ack(pool: &PgPool, worker: &str, claim: &worker::Claimed, result: Result<(), JobError>) {
    let policy = RetryPolicy {
        delays: NO_DELAY,
        max_attempts: 3,
    };
    let verdict = Verdict::of(result, claim.attempt as u32, &policy, 1.0);
    let now = Utc::now();
    let finished = Finished {
        job_id: claim.id.clone(),
        queue: QUEUES[0],
        worker: worker.to_owned(),
        claimed_at: claim.claimed_at,
        attempt: claim.attempt,
        outcome: verdict.outcome,
        run_in: verdict.run_in,
        error: verdict.error,
        started_at: now,
        finished_at: now,
    };
    worker::acknowledge(pool, &[finished]).await.unwrap();
}

async fn state_of(pool: &PgPool, id: &str) -> (JobState, Option<String>) {
    sqlx::query_as("SELECT state, locked_by FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The attempts of `id` in the history: (attempt, outcome).
async fn history_of(pool: &PgPool, id: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT attempt, outcome::text FROM job_attempts WHERE job_id = $1 ORDER BY attempt, finished_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn by_id(id: &str) -> Filter {
    Filter {
        ids: vec![id.to_owned()],
        ..Filter::default()
    }
}

/// A process runs one worker per queue, so every claim it makes has the same
/// `locked_by`. An operator cancels a running job and replays it, and the same process
/// claims it again; the first (cancelled, never interrupted) attempt's late result must
/// not be written over the new attempt's job (it was: a retry made the job due while
/// the second attempt still ran, and another process claimed it — two workers ran the
/// job at once). The late result is still recorded.
#[tokio::test]
async fn late_result_of_a_cancelled_attempt_does_not_touch_the_job_claimed_again() {
    let db = common::TestDb::new().await;
    let pool = &db.pool;
    let id = put(pool, None).await.unwrap();
    let first = take(pool, "p1:sm.plain").await.remove(0);
    operator::apply(pool, &by_id(&id), Action::Cancel, "stuck")
        .await
        .unwrap();
    operator::apply(pool, &by_id(&id), Action::Replay, "try again")
        .await
        .unwrap();
    let second = take(pool, "p1:sm.plain").await.remove(0);
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 1));
    assert_ne!(
        first.claimed_at, second.claimed_at,
        "two claims, two claim times"
    );

    // The cancelled attempt ends (a retryable error) after the job was claimed again.
    ack(pool, "p1:sm.plain", &first, Err(JobError::retryable("503"))).await;

    let stolen = take(pool, "p0:sm.plain").await;
    assert!(
        stolen.is_empty(),
        "job handed to p0 while p1's second attempt still runs it (the job is now {:?})",
        state_of(pool, &id).await
    );
    assert_eq!(
        state_of(pool, &id).await,
        (JobState::Running, Some("p1:sm.plain".to_owned())),
        "the second claim still owns the job"
    );
    assert_eq!(
        history_of(pool, &id).await,
        vec![(1, "retry_scheduled".to_owned())],
        "the late attempt is recorded"
    );

    // The second attempt's own result still counts.
    ack(pool, "p1:sm.plain", &second, Ok(())).await;
    assert_eq!(
        state_of(pool, &id).await,
        (JobState::Completed, Some("p1:sm.plain".to_owned()))
    );
}

/// The same, by another road: a process cut off from the database long enough to look
/// dead has its jobs taken back; once it is reachable again it claims one of them anew
/// (attempt 2) while its attempt 1 is still running. Attempt 1's result (it completed
/// the job under attempt 2) and a hand-back of attempt 1's claim must change nothing.
#[tokio::test]
async fn late_result_after_a_take_back_does_not_finish_the_new_claim() {
    let db = common::TestDb::new().await;
    let pool = &db.pool;
    let w = || vec![("p1:sm.plain".to_owned(), QUEUES[0])];
    worker::heartbeat(pool, &w()).await.unwrap();
    let id = put(pool, None).await.unwrap();
    let first = take(pool, "p1:sm.plain").await.remove(0);
    // p1 misses its heartbeats; another process's check takes the job back.
    worker::retire(pool, &["p1:sm.plain".to_owned()])
        .await
        .unwrap();
    worker::take_back_orphans(pool, ORPHAN_WINDOW, 3, None)
        .await
        .unwrap();
    // p1 is back, heart-beats and claims again.
    worker::heartbeat(pool, &w()).await.unwrap();
    let second = take(pool, "p1:sm.plain").await.remove(0);
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 2));

    let stale = [(first.id.clone(), first.claimed_at)];
    let handed = worker::hand_back(pool, "p1:sm.plain", &stale)
        .await
        .unwrap();
    assert_eq!(
        handed, 0,
        "a hand-back of attempt 1's claim must not give back attempt 2"
    );

    ack(pool, "p1:sm.plain", &first, Ok(())).await;

    assert_eq!(
        state_of(pool, &id).await,
        (JobState::Running, Some("p1:sm.plain".to_owned())),
        "attempt 1's result must not end attempt 2"
    );
    // The take-back's crash row, then attempt 1's late result.
    assert_eq!(
        history_of(pool, &id).await,
        vec![(1, "crashed".to_owned()), (1, "completed".to_owned())]
    );

    let current = [(second.id.clone(), second.claimed_at)];
    let handed = worker::hand_back(pool, "p1:sm.plain", &current)
        .await
        .unwrap();
    assert_eq!(handed, 1, "attempt 2's own claim gives the job back");
    assert_eq!(state_of(pool, &id).await, (JobState::Retryable, None));
}

/// Cancelling frees the de-duplication key, and a new job may take it; a replay of the
/// cancelled job must not fail on the unique index (it did, 23505, refusing the
/// operator's whole replay): the job runs again without its key, and the new job keeps
/// it. A discarded job still holds its key, and a replay keeps it.
#[tokio::test]
async fn replaying_a_cancelled_job_whose_key_was_taken_does_not_fail() {
    let db = common::TestDb::new().await;
    let pool = &db.pool;
    let first = put(pool, Some("k0")).await.unwrap();
    operator::apply(pool, &by_id(&first), Action::Cancel, "wrong")
        .await
        .unwrap();
    let second = put(pool, Some("k0")).await;
    assert!(second.is_some(), "cancelling frees the key");

    let replay = operator::apply(pool, &by_id(&first), Action::Replay, "after all").await;
    assert_eq!(
        replay.ok(),
        Some(vec![first.clone()]),
        "the replay goes through"
    );
    let key_of = |id: String| async move {
        sqlx::query_as::<_, (JobState, Option<String>)>(
            "SELECT state, dedupe_key FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(key_of(first.clone()).await, (JobState::Available, None));
    assert_eq!(
        key_of(second.clone().unwrap()).await,
        (JobState::Available, Some("k0".to_owned())),
        "the new job keeps the key"
    );
    assert_eq!(put(pool, Some("k0")).await, None, "the key is still held");

    // A discarded job's key is its own still: its replay keeps it.
    let third = put(pool, Some("k1")).await.unwrap();
    let claim = take(pool, "p0:sm.plain")
        .await
        .into_iter()
        .find(|c| c.id == third)
        .unwrap();
    ack(
        pool,
        "p0:sm.plain",
        &claim,
        Err(JobError::permanent("HTTP 400")),
    )
    .await;
    assert_eq!(key_of(third.clone()).await.0, JobState::Discarded);
    operator::apply(pool, &by_id(&third), Action::Replay, "fixed")
        .await
        .unwrap();
    assert_eq!(
        key_of(third).await,
        (JobState::Available, Some("k1".to_owned()))
    );
}

/// A snooze gives its attempt back, so it may come on the job's last attempt: the job
/// must still wait the time asked for. NOT FIXED YET (found once the fixes above were
/// in; the property test finds it too): the acknowledgement keeps the old `run_at`
/// whenever the row's attempts are used up, which is right only for a retry (it then
/// discards), so a job snoozed on its last attempt is due at once.
#[tokio::test]
async fn snoozing_on_the_last_attempt_waits() {
    let db = common::TestDb::new().await;
    let pool = &db.pool;
    let mut conn = pool.acquire().await.unwrap();
    let id = queue::insert(
        &mut conn,
        NewJob {
            queue: QUEUES[0],
            payload: b"{}",
            max_attempts: 1,
            run_at: None,
            dedupe_key: None,
            fair_key: None,
            wakeup: "trigger",
        },
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);
    let claim = take(pool, "p0:sm.plain").await.remove(0);
    assert_eq!((claim.attempt, claim.max_attempts), (1, 1));

    ack(pool, "p0:sm.plain", &claim, Err(JobError::snooze(HOUR))).await;

    let (state, attempt, due): (JobState, i32, bool) =
        sqlx::query_as("SELECT state, attempt, run_at <= now() FROM jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (state, attempt),
        (JobState::Scheduled, 0),
        "snoozed, attempt given back"
    );
    assert!(
        !due,
        "a job snoozed for an hour on its last attempt is due at once"
    );
    assert!(take(pool, "p1:sm.plain").await.is_empty());
}
