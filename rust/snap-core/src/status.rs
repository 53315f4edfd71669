//! Is a server's backup up to date? Judged from the backup server's side.
//!
//! A server that stops pushing cannot be trusted to say so, so the verdict
//! rests on what the backup server received: the last complete push, the
//! last failed transfer, whether a push is running now. The server's own
//! record only adds detail (why it failed) when it answers.
//!
//! Slots are the scheduled push times (`hours` at `minute`, in the fleet's
//! time zone). A slot is *due* once `grace` has passed since it. States:
//!
//! * `NEVER`: nothing complete was ever received (and no failure is known);
//! * `FAILED`: the latest attempt after the last complete push failed (or
//!   nothing complete ever arrived and an attempt failed);
//! * `OK`: a complete push started at or after the latest due slot;
//! * `LATE`: fewer than `missing_after` due slots passed without one;
//! * `MISSING`: `missing_after` or more did.

use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok,
    Late,
    Missing,
    Failed,
    Never,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Late => "LATE",
            State::Missing => "MISSING",
            State::Failed => "FAILED",
            State::Never => "NEVER",
        }
    }
}

/// A server's push schedule (from the snap ext_pillar).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Schedule {
    pub minute: u32,
    #[serde(default)]
    pub second: u32,
    pub hours: Vec<u32>,
}

/// What the backup server (and maybe the server itself) tells.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Observed {
    /// Start of the last push received completely (unix seconds).
    pub last_good: Option<f64>,
    /// Time of the latest failed attempt known (unix seconds).
    pub last_failed: Option<f64>,
    /// Why it failed, if known.
    pub failure: Option<String>,
    /// A push is being received right now, since (unix seconds).
    pub running_since: Option<f64>,
}

/// When to call a server late or missing (a field left out keeps its default).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Thresholds {
    /// Time a push gets after its slot before the slot counts as missed.
    pub grace_seconds: u64,
    /// Missed due slots from which a server is MISSING (below: LATE).
    pub missing_after: u32,
    /// IANA time zone of the schedule ("UTC", "Europe/Berlin"); None: this machine's.
    pub timezone: Option<String>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            grace_seconds: 2 * 3600,
            missing_after: 2,
            timezone: None,
        }
    }
}

/// The verdict on one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Assessment {
    pub state: State,
    /// Due slots since the last complete push.
    pub missed_slots: u32,
    /// Seconds since the last complete push started (None: never).
    pub age_seconds: Option<f64>,
    /// The latest due slot and the next slot (unix seconds).
    pub last_due_slot: Option<f64>,
    pub next_slot: Option<f64>,
    pub note: Option<String>,
}

fn timestamp(secs: f64) -> Result<Timestamp> {
    Timestamp::from_second(secs.floor() as i64)
        .map_err(|e| Error::invalid_input(format!("time {secs} is out of range: {e}")))
}

fn zone(name: Option<&str>) -> Result<TimeZone> {
    match name {
        None => Ok(TimeZone::system()),
        Some(n) => TimeZone::get(n)
            .map_err(|e| Error::invalid_input(format!("unknown time zone {n:?}: {e}"))),
    }
}

/// Every slot between `from` and `to` (unix seconds), in order.
pub fn slots_between(
    schedule: &Schedule,
    from: f64,
    to: f64,
    tz: Option<&str>,
) -> Result<Vec<f64>> {
    if schedule.minute > 59 || schedule.second > 59 || schedule.hours.iter().any(|h| *h > 23) {
        return Err(Error::invalid_input(format!(
            "schedule {schedule:?} is not a time of day"
        )));
    }
    let tz = zone(tz)?;
    let start: Date = timestamp(from)?.to_zoned(tz.clone()).date();
    let end: Date = timestamp(to)?.to_zoned(tz.clone()).date();
    let mut hours = schedule.hours.clone();
    hours.sort_unstable();
    let mut out = Vec::new();
    let mut day = start
        .checked_sub(1.day())
        .map_err(|e| Error::internal(e.to_string()))?;
    while day <= end {
        for h in &hours {
            let t = Time::new(*h as i8, schedule.minute as i8, schedule.second as i8, 0)
                .map_err(|e| Error::internal(e.to_string()))?;
            let at = day
                .to_datetime(t)
                .to_zoned(tz.clone())
                .map_err(|e| Error::internal(e.to_string()))?
                .timestamp()
                .as_second() as f64;
            if at > from && at <= to {
                out.push(at);
            }
        }
        day = day
            .checked_add(1.day())
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    Ok(out)
}

/// Judge one server at `now` (unix seconds).
pub fn assess(
    schedule: &Schedule,
    seen: &Observed,
    now: f64,
    limits: &Thresholds,
) -> Result<Assessment> {
    let tz = limits.timezone.as_deref();
    let grace = Duration::from_secs(limits.grace_seconds).as_secs_f64();
    let due_until = now - grace;
    let week = 8.0 * 86400.0;
    let recent = slots_between(schedule, now - week, now + 86400.0 * 2.0, tz)?;
    let last_due_slot = recent.iter().copied().rfind(|s| *s <= due_until);
    let next_slot = recent.iter().copied().find(|s| *s > now);
    let running = seen.running_since.map(|t| {
        format!(
            "receiving a push since {}",
            crate::record::format_unix(t as i64)
        )
    });
    let Some(good) = seen.last_good else {
        let (state, note) = match (seen.last_failed, &seen.failure) {
            (Some(_), reason) => (State::Failed, reason.clone().or(running)),
            (None, _) => (State::Never, running),
        };
        return Ok(Assessment {
            state,
            missed_slots: 0,
            age_seconds: None,
            last_due_slot,
            next_slot,
            note,
        });
    };
    let missed = if due_until > good {
        slots_between(schedule, good, due_until, tz)?.len() as u32
    } else {
        0
    };
    let failed_after = seen.last_failed.is_some_and(|f| f > good);
    let state = if failed_after {
        State::Failed
    } else if missed == 0 {
        State::Ok
    } else if missed < limits.missing_after {
        State::Late
    } else {
        State::Missing
    };
    let note = if failed_after {
        seen.failure.clone().or(running)
    } else {
        running
    };
    Ok(Assessment {
        state,
        missed_slots: missed,
        age_seconds: Some((now - good).max(0.0)),
        last_due_slot,
        next_slot,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> f64 {
        text.parse::<Timestamp>().unwrap().as_second() as f64
    }

    fn sched() -> Schedule {
        Schedule {
            minute: 17,
            second: 0,
            hours: vec![2, 10, 18],
        }
    }

    fn utc() -> Thresholds {
        Thresholds {
            timezone: Some("UTC".into()),
            ..Thresholds::default()
        }
    }

    fn good(t: &str) -> Observed {
        Observed {
            last_good: Some(at(t)),
            ..Observed::default()
        }
    }

    #[test]
    fn slots_are_the_scheduled_times() {
        let s = slots_between(
            &sched(),
            at("2026-11-20T00:00:00Z"),
            at("2026-11-21T00:00:00Z"),
            Some("UTC"),
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                at("2026-11-20T02:17:00Z"),
                at("2026-11-20T10:17:00Z"),
                at("2026-11-20T18:17:00Z")
            ]
        );
        // In another zone the same wall-clock slots are other instants.
        let b = slots_between(
            &sched(),
            at("2026-11-20T00:00:00Z"),
            at("2026-11-21T00:00:00Z"),
            Some("Europe/Berlin"),
        )
        .unwrap();
        assert_eq!(b[0], at("2026-11-20T01:17:00Z"));
    }

    #[test]
    fn ok_late_missing_by_the_clock() {
        // Last complete push at the 02:17 slot.
        let seen = good("2026-11-20T02:17:05Z");
        let state = |now: &str| assess(&sched(), &seen, at(now), &utc()).unwrap();
        // 10:17 slot not yet due (grace 2 h).
        assert_eq!(state("2026-11-20T12:00:00Z").state, State::Ok);
        // 10:17 + 2 h passed: one missed slot.
        let late = state("2026-11-20T12:30:00Z");
        assert_eq!((late.state, late.missed_slots), (State::Late, 1));
        // 18:17 + 2 h passed too: two missed slots.
        let missing = state("2026-11-20T20:30:00Z");
        assert_eq!((missing.state, missing.missed_slots), (State::Missing, 2));
        assert_eq!(
            missing.age_seconds,
            Some(at("2026-11-20T20:30:00Z") - at("2026-11-20T02:17:05Z"))
        );
        assert_eq!(missing.next_slot, Some(at("2026-11-21T02:17:00Z")));
    }

    #[test]
    fn failed_and_never() {
        let mut seen = good("2026-11-20T02:17:05Z");
        seen.last_failed = Some(at("2026-11-20T10:17:30Z"));
        seen.failure = Some("cannot reach the backup server".into());
        let a = assess(&sched(), &seen, at("2026-11-20T11:00:00Z"), &utc()).unwrap();
        assert_eq!(a.state, State::Failed);
        assert_eq!(a.note.as_deref(), Some("cannot reach the backup server"));
        // A good push after the failure clears it.
        seen.last_good = Some(at("2026-11-20T18:17:01Z"));
        assert_eq!(
            assess(&sched(), &seen, at("2026-11-20T19:00:00Z"), &utc())
                .unwrap()
                .state,
            State::Ok
        );
        let none = Observed::default();
        assert_eq!(
            assess(&sched(), &none, at("2026-11-20T19:00:00Z"), &utc())
                .unwrap()
                .state,
            State::Never
        );
        let running = Observed {
            running_since: Some(at("2026-11-20T18:17:00Z")),
            ..Observed::default()
        };
        let a = assess(&sched(), &running, at("2026-11-20T18:20:00Z"), &utc()).unwrap();
        assert_eq!(a.state, State::Never);
        assert!(
            a.note
                .unwrap()
                .contains("receiving a push since 2026-11-20T18:17:00Z")
        );
    }

    #[test]
    fn bad_input_is_named() {
        let bad = Schedule {
            minute: 61,
            second: 0,
            hours: vec![2],
        };
        assert!(assess(&bad, &Observed::default(), 0.0, &utc()).is_err());
        let mut tz = utc();
        tz.timezone = Some("Mars/Olympus".into());
        assert!(
            assess(&sched(), &Observed::default(), 0.0, &tz)
                .unwrap_err()
                .to_string()
                .contains("Mars")
        );
    }
}
