//! Per-seat progress of a campaign: the organisers' evening and weekly view.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Result, Store};

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
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignReport {
    pub campaign_id: i64,
    pub seats: Vec<SeatProgress>,
    pub totals: SeatProgress,
}

impl Store {
    /// Seats that are targets or have members, targets first, then by name.
    pub async fn campaign_report(&self, campaign_id: i64) -> Result<CampaignReport> {
        // 404 for an unknown campaign rather than an empty report.
        self.get_campaign(campaign_id).await?;
        let mut seats: BTreeMap<String, SeatProgress> = BTreeMap::new();
        let rows = sqlx::query(
            "select s.code, s.name, s.is_target, s.weight, count(m.id) as members, \
             coalesce(sum(case when x.phone is null then 0 else 1 end), 0) as opted_out \
             from seats s left join members m on m.seat_id = s.id \
             left join suppressions x on x.phone = m.phone \
             group by s.id, s.code, s.name, s.is_target, s.weight \
             having count(m.id) > 0 or s.is_target = 1",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let code: String = r.try_get("code")?;
            seats.insert(
                code.clone(),
                SeatProgress {
                    code,
                    name: r.try_get("name")?,
                    is_target: r.try_get::<i64, _>("is_target")? != 0,
                    weight: r.try_get("weight")?,
                    members: r.try_get("members")?,
                    opted_out: r.try_get("opted_out")?,
                    ..Default::default()
                },
            );
        }

        // Released leases (handed back before any dial) are not attempts.
        let rows = sqlx::query(
            "select s.code, count(*) as attempts, \
             count(distinct case when a.state = 'completed' and a.disposition is null \
                   then a.member_id end) as reached \
             from contact_attempts a join seats s on s.id = a.seat_id \
             where a.campaign_id = $1 and a.state <> 'released' group by s.code",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            if let Some(seat) = seats.get_mut(&r.try_get::<String, _>("code")?) {
                seat.attempts = r.try_get("attempts")?;
                seat.reached = r.try_get("reached")?;
            }
        }
        // Finished: out of the queue for good (surveyed, a final disposition, or out of
        // attempts).
        let rows = sqlx::query(
            "select s.code, count(*) as completed \
             from call_queue q join seats s on s.id = q.seat_id \
             where q.campaign_id = $1 and q.state = 'done' group by s.code",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            if let Some(seat) = seats.get_mut(&r.try_get::<String, _>("code")?) {
                seat.completed = r.try_get("completed")?;
            }
        }

        let rows = sqlx::query(
            "select s.code, a.question_code, a.option_code, count(*) as n \
             from answers a join members m on m.id = a.member_id join seats s on s.id = m.seat_id \
             where a.campaign_id = $1 group by s.code, a.question_code, a.option_code",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            if let Some(seat) = seats.get_mut(&r.try_get::<String, _>("code")?) {
                seat.answers
                    .entry(r.try_get("question_code")?)
                    .or_default()
                    .insert(r.try_get("option_code")?, r.try_get("n")?);
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
            for (q, opts) in &s.answers {
                for (o, n) in opts {
                    *totals
                        .answers
                        .entry(q.clone())
                        .or_default()
                        .entry(o.clone())
                        .or_default() += n;
                }
            }
        }
        Ok(CampaignReport {
            campaign_id,
            seats,
            totals,
        })
    }
}
