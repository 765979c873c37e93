//! Per-seat progress of a campaign: the organisers' evening and weekly view.
//!
//! Three kinds of figure:
//! * per seat, for the whole campaign: members, opt-outs, attempts, contacts, answers by
//!   option, members remaining, attempts in the last hour (the seat's current rate);
//! * per seat and ISO week (weeks start Monday 00:00 Europe/London, the organisers'
//!   week): attempts, contacts, surveyed members and answers;
//! * live figures for the evening: volunteers by what they are doing, their average wait
//!   between members, calls per minute.
//!
//! Every activity figure is one grouped query over `contact_attempts` or `answers` for
//! the campaign, bucketed by time windows passed in as JSON (the whole campaign is one
//! window, each week another), so the report costs a few index range scans whatever the
//! number of weeks. Indexes: `migrations/*/0005_limits.sql`.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Backend, Result, Store};
use crate::domain::DEFAULT_TIME_ZONE;

/// Live figures look back this far for calls per minute.
pub const LIVE_WINDOW_MINUTES: i64 = 15;
/// The current rate and the average wait look back one hour.
const HOUR_MS: i64 = 3_600_000;
/// A volunteer session older than this with no end recorded is assumed lost (its final
/// status callback never arrived) and is not counted as live.
const STALE_SESSION_MS: i64 = 12 * HOUR_MS;
/// Weekly reports cover at most this many weeks back from now.
const MAX_WEEKS: usize = 520;

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SeatProgress {
    pub code: String,
    pub name: String,
    pub is_target: bool,
    pub weight: i64,
    /// Members on file in the seat.
    pub members: i64,
    /// Of those, on the suppression list.
    pub opted_out: i64,
    /// Call attempts made for this campaign (leases handed back undialled excluded).
    pub attempts: i64,
    /// Distinct members spoken to (an attempt saved with survey answers, no disposition).
    pub reached: i64,
    /// Members finished for this campaign: surveyed, a final disposition, or out of
    /// attempts. They are not called again.
    pub completed: i64,
    /// Answers stored, by question and option code.
    pub answers: BTreeMap<String, BTreeMap<String, i64>>,
    /// Distinct members actually reached: surveyed, or on a connected call that ended
    /// with "refused" or "call back later". Wrong numbers, answering machines and
    /// unanswered calls are not contacts.
    pub contacts: i64,
    /// Members still to call: queued and not finished (including those waiting out a
    /// retry gap) or being called right now. Opted-out members are not counted.
    pub remaining: i64,
    /// Attempts started in the last hour: the seat's current rate.
    pub attempts_last_hour: i64,
    /// The seat's configured limit in attempts per hour, if any.
    pub rate_per_hour: Option<i64>,
}

/// One seat's activity in one ISO week.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SeatWeek {
    pub code: String,
    pub name: String,
    pub attempts: i64,
    pub contacts: i64,
    pub reached: i64,
    pub answers: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A week of the campaign: seats with any activity that week, and the national totals.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WeekProgress {
    /// ISO 8601 week, e.g. `2026-W50`.
    #[schema(example = "2026-W50")]
    pub week: String,
    /// Monday 00:00 Europe/London, as an RFC 3339 instant.
    pub starts_at: String,
    pub seats: Vec<SeatWeek>,
    pub totals: SeatWeek,
}

/// Volunteers on a live call session for the campaign, by what they are doing.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct VolunteerStates {
    /// Waiting for the next member: hearing who is next, deciding to dial, or told that
    /// nobody can be called right now.
    pub waiting: i64,
    /// Dialling a member or talking to them.
    pub on_call: i64,
    /// The member leg is over; keying the answers.
    pub keying: i64,
    pub total: i64,
}

/// The evening at a glance.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LiveFigures {
    /// When these figures were taken (RFC 3339).
    pub at: String,
    pub volunteers: VolunteerStates,
    /// Mean seconds from a volunteer finishing one member to being handed the next, over
    /// members handed out in the last hour; null when there is no such pair yet.
    pub avg_wait_seconds: Option<f64>,
    /// Attempts started per minute over the last `window_minutes`.
    pub calls_per_minute: f64,
    pub window_minutes: i64,
    /// Attempts started in the last hour, all seats.
    pub attempts_last_hour: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignReport {
    pub campaign_id: i64,
    pub seats: Vec<SeatProgress>,
    pub totals: SeatProgress,
    /// Per ISO week, oldest first; present when asked for (`?weekly=true`, `--weekly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weeks: Option<Vec<WeekProgress>>,
    pub live: LiveFigures,
}

/// What to report, and as of when.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// "Now" for the last hour, live figures and the current week (the app's clock).
    pub now: Timestamp,
    pub weekly: bool,
}

/// Activity of one seat in one window.
#[derive(Debug, Default, Clone)]
struct Activity {
    attempts: i64,
    contacts: i64,
    reached: i64,
    answers: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A half-open interval [start, end) of unix milliseconds.
type Window = (i64, i64);

/// The ISO weeks (Europe/London) from the one containing `from` to the one containing
/// `to`: (label, start, end).
pub fn iso_weeks(from: Timestamp, to: Timestamp) -> Vec<(String, Timestamp, Timestamp)> {
    let tz = TimeZone::get(DEFAULT_TIME_ZONE).unwrap_or(TimeZone::UTC);
    let week = jiff::Span::new().days(7);
    let monday = |t: Timestamp| {
        let date = t.to_zoned_datetime(tz.clone()).date();
        let back = i64::from(date.weekday().to_monday_zero_offset());
        date.checked_sub(jiff::Span::new().days(back))
            .unwrap_or(date)
    };
    let last = monday(to);
    // At most MAX_WEEKS, the most recent ones.
    let mut day = monday(from);
    if let Ok(earliest) = last.checked_sub(jiff::Span::new().days(7 * (MAX_WEEKS as i64 - 1)))
        && earliest > day
    {
        day = earliest;
    }
    let mut weeks = Vec::new();
    while day <= last {
        let Ok(next) = day.checked_add(week) else {
            break;
        };
        let (Ok(start), Ok(end)) = (
            day.to_zoned_datetime(tz.clone()),
            next.to_zoned_datetime(tz.clone()),
        ) else {
            break;
        };
        let iso = day.iso_week_date();
        weeks.push((
            format!("{}-W{:02}", iso.year(), iso.week()),
            start.timestamp(),
            end.timestamp(),
        ));
        day = next;
    }
    weeks
}

fn add_answers(
    into: &mut BTreeMap<String, BTreeMap<String, i64>>,
    from: &BTreeMap<String, BTreeMap<String, i64>>,
) {
    for (q, opts) in from {
        for (o, n) in opts {
            *into
                .entry(q.clone())
                .or_default()
                .entry(o.clone())
                .or_default() += n;
        }
    }
}

impl Store {
    /// The report as of the system clock, without weeks.
    pub async fn campaign_report(&self, campaign_id: i64) -> Result<CampaignReport> {
        self.campaign_report_with(
            campaign_id,
            ReportOptions {
                now: Timestamp::now(),
                weekly: false,
            },
        )
        .await
    }

    /// Seats that are targets or have members, targets first, then by name.
    pub async fn campaign_report_with(
        &self,
        campaign_id: i64,
        opts: ReportOptions,
    ) -> Result<CampaignReport> {
        // 404 for an unknown campaign rather than an empty report.
        self.get_campaign(campaign_id).await?;
        let now = opts.now.as_millisecond();
        let mut seats: BTreeMap<String, SeatProgress> = BTreeMap::new();
        // Members per seat from the (seat_id, id) index alone; opt-outs from the
        // suppression list's side (a probe of members by phone per suppressed number),
        // so neither reads the members table itself.
        let rows = sqlx::query(
            "select s.code, s.name, s.is_target, s.weight, s.rate_per_hour, \
               (select count(*) from members m where m.seat_id = s.id) as members \
             from seats s",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let members: i64 = r.try_get("members")?;
            let is_target = r.try_get::<i64, _>("is_target")? != 0;
            if members == 0 && !is_target {
                continue;
            }
            let code: String = r.try_get("code")?;
            seats.insert(
                code.clone(),
                SeatProgress {
                    code,
                    name: r.try_get("name")?,
                    is_target,
                    weight: r.try_get("weight")?,
                    members,
                    rate_per_hour: r.try_get("rate_per_hour")?,
                    ..Default::default()
                },
            );
        }
        // SQLite has no statistics to see that suppressions is the small side: `cross
        // join` fixes the order there; PostgreSQL plans it from its own statistics.
        let join = match self.backend {
            Backend::Postgres => "join",
            Backend::Sqlite => "cross join",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select s.code, count(*) as opted_out from suppressions x \
             {join} members m on m.phone = x.phone join seats s on s.id = m.seat_id group by s.code"
        )))
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            if let Some(seat) = seats.get_mut(&r.try_get::<String, _>("code")?) {
                seat.opted_out = r.try_get("opted_out")?;
            }
        }

        // Window 0: the whole campaign; window 1: the last hour. (Bounds stay well inside
        // the range a JSON number carries exactly.)
        const FOREVER: i64 = 1 << 53;
        let windows = [(0, FOREVER), (now - HOUR_MS, FOREVER)];
        let activity = self.activity(campaign_id, &windows).await?;
        for ((w, code), a) in activity {
            let Some(seat) = seats.get_mut(&code) else {
                continue;
            };
            if w == 0 {
                seat.attempts = a.attempts;
                seat.reached = a.reached;
                seat.contacts = a.contacts;
                seat.answers = a.answers;
            } else {
                seat.attempts_last_hour = a.attempts;
            }
        }
        // Finished: out of the queue for good; remaining: still to call.
        let rows = sqlx::query(
            "select s.code, \
               count(case when q.state = 'done' then 1 end) as completed, \
               count(case when q.state in ('ready', 'leased') then 1 end) as remaining \
             from call_queue q join seats s on s.id = q.seat_id \
             where q.campaign_id = $1 group by s.code",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            if let Some(seat) = seats.get_mut(&r.try_get::<String, _>("code")?) {
                seat.completed = r.try_get("completed")?;
                seat.remaining = r.try_get("remaining")?;
            }
        }

        let mut seats: Vec<SeatProgress> = seats.into_values().collect();
        seats.sort_by(|a, b| {
            b.is_target
                .cmp(&a.is_target)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut totals = SeatProgress {
            code: "ALL".into(),
            name: "All seats".into(),
            ..Default::default()
        };
        for s in &seats {
            totals.members += s.members;
            totals.opted_out += s.opted_out;
            totals.attempts += s.attempts;
            totals.reached += s.reached;
            totals.completed += s.completed;
            totals.contacts += s.contacts;
            totals.remaining += s.remaining;
            totals.attempts_last_hour += s.attempts_last_hour;
            add_answers(&mut totals.answers, &s.answers);
        }
        let weeks = if opts.weekly {
            Some(self.weekly(campaign_id, &seats, opts.now).await?)
        } else {
            None
        };
        Ok(CampaignReport {
            campaign_id,
            seats,
            totals,
            weeks,
            live: self.live_figures(campaign_id, opts.now).await?,
        })
    }

    /// Attempts, contacts, surveyed members and answers per (window, seat code).
    async fn activity(
        &self,
        campaign_id: i64,
        windows: &[Window],
    ) -> Result<HashMap<(usize, String), Activity>> {
        let list: Vec<(usize, i64, i64)> = windows
            .iter()
            .enumerate()
            .map(|(i, (s, e))| (i, *s, *e))
            .collect();
        let json = serde_json::to_string(&list)?;
        let cte = match self.backend {
            Backend::Postgres => {
                "with w (wk, starts, ends) as (select cast(e->>0 as bigint), \
                 cast(e->>1 as bigint), cast(e->>2 as bigint) from json_array_elements($2::json) e)"
            }
            Backend::Sqlite => {
                "with w (wk, starts, ends) as (select json_extract(value, '$[0]'), \
                 json_extract(value, '$[1]'), json_extract(value, '$[2]') from json_each($2))"
            }
        };
        // Released leases (handed back before any dial) are not attempts.
        let sql = format!(
            "{cte} select w.wk, s.code, count(*) as attempts, \
               count(distinct case when a.state = 'completed' and a.disposition is null \
                     then a.member_id end) as reached, \
               count(distinct case when a.state = 'completed' and (a.disposition is null \
                     or (a.disposition in ('refused', 'call_back_later') \
                         and a.dial_status = 'completed')) \
                     then a.member_id end) as contacts \
             from contact_attempts a join w on a.created_at >= w.starts and a.created_at < w.ends \
             join seats s on s.id = a.seat_id \
             where a.campaign_id = $1 and a.state <> 'released' group by w.wk, s.code"
        );
        let mut out: HashMap<(usize, String), Activity> = HashMap::new();
        for r in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(&json)
            .fetch_all(&self.pool)
            .await?
        {
            let wk: i64 = r.try_get("wk")?;
            let a = out.entry((wk as usize, r.try_get("code")?)).or_default();
            a.attempts = r.try_get("attempts")?;
            a.reached = r.try_get("reached")?;
            a.contacts = r.try_get("contacts")?;
        }
        let sql = format!(
            "{cte} select w.wk, s.code, a.question_code, a.option_code, count(*) as n \
             from answers a join w on a.created_at >= w.starts and a.created_at < w.ends \
             join members m on m.id = a.member_id join seats s on s.id = m.seat_id \
             where a.campaign_id = $1 group by w.wk, s.code, a.question_code, a.option_code"
        );
        for r in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(&json)
            .fetch_all(&self.pool)
            .await?
        {
            let wk: i64 = r.try_get("wk")?;
            out.entry((wk as usize, r.try_get("code")?))
                .or_default()
                .answers
                .entry(r.try_get("question_code")?)
                .or_default()
                .insert(r.try_get("option_code")?, r.try_get("n")?);
        }
        Ok(out)
    }

    /// Per ISO week from the campaign's first attempt or answer to now.
    async fn weekly(
        &self,
        campaign_id: i64,
        seats: &[SeatProgress],
        now: Timestamp,
    ) -> Result<Vec<WeekProgress>> {
        let row = sqlx::query(
            "select min(lo) as first, max(hi) as last from ( \
               select min(created_at) as lo, max(created_at) as hi from contact_attempts \
                 where campaign_id = $1 \
               union all \
               select min(created_at) as lo, max(created_at) as hi from answers \
                 where campaign_id = $1) x",
        )
        .bind(campaign_id)
        .fetch_one(&self.pool)
        .await?;
        let first: Option<i64> = row.try_get("first")?;
        let last: Option<i64> = row.try_get("last")?;
        let (Some(first), Some(last)) = (
            first.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
            last.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        ) else {
            return Ok(Vec::new());
        };
        // Up to now, or to the latest activity if a manual clock put it after now.
        let weeks = iso_weeks(first.min(now), now.max(last));
        let windows: Vec<Window> = weeks
            .iter()
            .map(|(_, s, e)| (s.as_millisecond(), e.as_millisecond()))
            .collect();
        let activity = self.activity(campaign_id, &windows).await?;
        let names: HashMap<&str, &str> = seats
            .iter()
            .map(|s| (s.code.as_str(), s.name.as_str()))
            .collect();
        // Seats in the order of the main report.
        let order: HashMap<&str, usize> = seats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.code.as_str(), i))
            .collect();
        let mut out = Vec::with_capacity(weeks.len());
        for (i, (label, start, _)) in weeks.into_iter().enumerate() {
            let mut rows: Vec<SeatWeek> = activity
                .iter()
                .filter(|((w, _), _)| *w == i)
                .map(|((_, code), a)| SeatWeek {
                    code: code.clone(),
                    name: names.get(code.as_str()).copied().unwrap_or(code).to_owned(),
                    attempts: a.attempts,
                    contacts: a.contacts,
                    reached: a.reached,
                    answers: a.answers.clone(),
                })
                .collect();
            rows.sort_by_key(|r| (order.get(r.code.as_str()).copied(), r.code.clone()));
            let mut totals = SeatWeek {
                code: "ALL".into(),
                name: "All seats".into(),
                ..Default::default()
            };
            for r in &rows {
                totals.attempts += r.attempts;
                totals.contacts += r.contacts;
                totals.reached += r.reached;
                add_answers(&mut totals.answers, &r.answers);
            }
            out.push(WeekProgress {
                week: label,
                starts_at: start.to_string(),
                seats: rows,
                totals,
            });
        }
        Ok(out)
    }

    /// Volunteers by state, their average wait between members, calls per minute.
    pub async fn live_figures(&self, campaign_id: i64, now: Timestamp) -> Result<LiveFigures> {
        let now_ms = now.as_millisecond();
        // Sessions are stamped with the system clock; attempts with the app's clock.
        let live_since = crate::domain::now_millis() - STALE_SESSION_MS;
        let row = sqlx::query(
            "select count(distinct v.id) as total, \
               count(distinct case when a.state = 'dialling' then v.id end) as on_call, \
               count(distinct case when a.state = 'answered' then v.id end) as keying \
             from volunteer_sessions v left join contact_attempts a \
               on a.session_id = v.id and a.state in ('dialling', 'answered') \
             where v.campaign_id = $1 and v.state = 'active' and v.created_at >= $2",
        )
        .bind(campaign_id)
        .bind(live_since)
        .fetch_one(&self.pool)
        .await?;
        let total: i64 = row.try_get("total")?;
        let on_call: i64 = row.try_get("on_call")?;
        let keying: i64 = row.try_get("keying")?;

        let window_ms = LIVE_WINDOW_MINUTES * 60_000;
        let row = sqlx::query(
            "select count(*) as last_hour, \
               count(case when created_at >= $3 then 1 end) as recent \
             from contact_attempts where campaign_id = $1 and created_at >= $2 \
               and state <> 'released'",
        )
        .bind(campaign_id)
        .bind(now_ms - HOUR_MS)
        .bind(now_ms - window_ms)
        .fetch_one(&self.pool)
        .await?;
        let last_hour: i64 = row.try_get("last_hour")?;
        let recent: i64 = row.try_get("recent")?;

        // The gap before each member handed out in the last hour: from the end of the
        // same session's previous attempt (whatever became of it) to this claim.
        let gaps: Vec<Option<i64>> = sqlx::query_scalar(
            "select a.created_at - (select p.ended_at from contact_attempts p \
                 where p.session_id = a.session_id and p.id < a.id \
                 order by p.id desc limit 1) \
             from contact_attempts a \
             where a.campaign_id = $1 and a.created_at >= $2 and a.session_id is not null",
        )
        .bind(campaign_id)
        .bind(now_ms - HOUR_MS)
        .fetch_all(&self.pool)
        .await?;
        let gaps: Vec<i64> = gaps.into_iter().flatten().map(|g| g.max(0)).collect();
        let avg_wait_seconds = (!gaps.is_empty())
            .then(|| gaps.iter().sum::<i64>() as f64 / gaps.len() as f64 / 1000.0);

        Ok(LiveFigures {
            at: Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string(),
            volunteers: VolunteerStates {
                waiting: total - on_call - keying,
                on_call,
                keying,
                total,
            },
            avg_wait_seconds,
            calls_per_minute: recent as f64 / LIVE_WINDOW_MINUTES as f64,
            window_minutes: LIVE_WINDOW_MINUTES,
            attempts_last_hour: last_hour,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn weeks_start_monday_midnight_london() {
        // Sunday 23:30 UTC in summer is already Monday in London.
        let w = iso_weeks(t("2026-06-14T23:30:00Z"), t("2026-06-15T12:00:00Z"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, "2026-W25");
        assert_eq!(w[0].1, t("2026-06-14T23:00:00Z"));
        assert_eq!(w[0].2, t("2026-06-21T23:00:00Z"));
        // Winter: Monday 00:00 London is 00:00 UTC.
        let w = iso_weeks(t("2026-12-08T18:00:00Z"), t("2026-12-15T09:00:00Z"));
        assert_eq!(
            w.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["2026-W50", "2026-W51"]
        );
        assert_eq!(w[0].1, t("2026-12-07T00:00:00Z"));
        // The week the clocks go back is 169 hours long.
        let w = iso_weeks(t("2026-10-21T12:00:00Z"), t("2026-10-21T12:00:00Z"));
        assert_eq!(
            w[0].2.as_millisecond() - w[0].1.as_millisecond(),
            169 * HOUR_MS
        );
        // ISO week-years: 1 January 2027 is in 2026-W53.
        let w = iso_weeks(t("2027-01-01T12:00:00Z"), t("2027-01-01T12:00:00Z"));
        assert_eq!(w[0].0, "2026-W53");
        // A very old campaign: the most recent weeks only.
        let w = iso_weeks(t("1990-01-01T12:00:00Z"), t("2026-12-08T12:00:00Z"));
        assert_eq!(w.len(), MAX_WEEKS);
        assert_eq!(w.last().unwrap().0, "2026-W50");
    }
}
