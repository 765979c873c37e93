//! The campaign report after real calls through the voice webhooks: per seat (attempts,
//! contacts, answers by option, remaining, the last hour), per ISO week, and the live
//! figures (volunteers by state, average wait, calls per minute). Also: a campaign with
//! nothing claimable tells the volunteer so and ends the call politely. Both backends.

mod common;

use common::phone::PhoneBank;
use jiff::SignedDuration;
use phonebank::store::Store;
use serde_json::{Value, json};

const HENDON: &str = "E14001279";
const FINCHLEY: &str = "E14001238";

/// Three Hendon members, one opted-out Finchley member, an active campaign, a volunteer.
struct Bank(PhoneBank);

impl std::ops::Deref for Bank {
    type Target = PhoneBank;
    fn deref(&self) -> &PhoneBank {
        &self.0
    }
}

async fn bank(store: Store) -> Bank {
    let members = "member_id,name,phone,constituency\n\
                   M1,Ann,+447700900001,Hendon\n\
                   M2,Bob,+447700900002,Hendon\n\
                   M3,Cat,+447700900003,Hendon\n\
                   M9,Zed,+447700900009,Finchley and Golders Green\n";
    Bank(PhoneBank::open(store, members, &["+447700900009"]).await)
}

impl Bank {
    async fn report(&self, query: &str) -> Value {
        let r = self
            .app
            .get(&format!(
                "/api/v1/campaigns/{}/report{query}",
                self.campaign_id
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    async fn live(&self) -> Value {
        let r = self
            .app
            .get(&format!(
                "/api/v1/campaigns/{}/report/live",
                self.campaign_id
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    async fn volunteers(&self) -> (i64, i64, i64, i64) {
        let v = self.live().await["volunteers"].clone();
        let n = |k: &str| v[k].as_i64().unwrap();
        (n("waiting"), n("on_call"), n("keying"), n("total"))
    }
}

fn seat<'a>(report: &'a Value, code: &str) -> &'a Value {
    report["seats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == code)
        .unwrap_or_else(|| panic!("{code} in {report}"))
}

both_backends! {
    async fn the_report_counts_seats_weeks_and_the_live_evening(store) {
        let bank = bank(store).await;
        // Week 2026-W50, Tuesday evening.
        let (mut call, doc) = bank.logged_in(1).await;
        assert_eq!(bank.volunteers().await, (1, 0, 0, 1), "waiting at the first announcement");

        // First member: surveyed (yes, then no to helping).
        let dialling = call.press(&doc, "1").await;
        assert_eq!(bank.volunteers().await, (0, 1, 0, 1), "on a call while dialling");
        let (q1, _) = call.run_dial(&dialling, "completed", 95).await;
        assert_eq!(bank.volunteers().await, (0, 0, 1, 1), "keying answers");
        let q2 = call.press(&q1, "1").await;
        let doc = call.press(&q2, "2").await;
        // Second member: no answer (recorded, re-queued). Third: surveyed, no.
        let dialling = call.press(&doc, "1").await;
        let (doc, _) = call.run_dial(&dialling, "no-answer", 0).await;
        assert!(doc.said().contains("Next: "), "{}", doc.raw);
        let dialling = call.press(&doc, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
        let doc = call.press(&q1, "2").await;
        assert!(doc.said().contains("nobody to call"), "{}", doc.raw);

        // Two minutes later a new member is imported; the volunteer checks again.
        bank.advance(SignedDuration::from_secs(120));
        let r = bank
            .app
            .raw(
                "POST",
                "/api/v1/members/import",
                "text/csv",
                "member_id,name,phone,constituency\nM4,Dee,+447700900004,Hendon\n",
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        let doc = call.press(&doc, "1").await;
        assert!(doc.said().contains("Dee"), "{}", doc.raw);
        let live = bank.live().await;
        // Gaps before the 2nd, 3rd and 4th members: 0, 0 and 120 seconds.
        assert_eq!(live["avg_wait_seconds"].as_f64(), Some(40.0), "{live}");
        assert_eq!(live["attempts_last_hour"], 4, "{live}");
        assert_eq!(live["window_minutes"], 15);
        let dialling = call.press(&doc, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
        let doc = call.press(&q1, "3").await;
        assert!(doc.said().contains("nobody to call"), "{}", doc.raw);
        call.hang_up().await;
        assert_eq!(bank.volunteers().await, (0, 0, 0, 0), "nobody live after hanging up");

        // A week later (2026-W51), the unanswered member is tried again and surveyed.
        bank.advance(SignedDuration::from_hours(24 * 7));
        let (mut call, doc) = bank.logged_in(2).await;
        assert!(doc.said().contains("Bob"), "{}", doc.raw);
        let dialling = call.press(&doc, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let doc = call.press(&q1, "2").await;
        assert!(doc.said().contains("nobody to call"), "{}", doc.raw);
        call.hang_up().await;

        let report = bank.report("").await;
        assert!(report.get("weeks").is_none(), "weeks only when asked for");
        let hendon = seat(&report, HENDON);
        assert_eq!(hendon["members"], 4);
        assert_eq!(hendon["attempts"], 5);
        assert_eq!(hendon["contacts"], 4);
        assert_eq!(hendon["reached"], 4);
        assert_eq!(hendon["completed"], 4);
        assert_eq!(hendon["remaining"], 0);
        assert_eq!(hendon["attempts_last_hour"], 1);
        assert_eq!(hendon["answers"], json!({"support": {"yes": 1, "no": 2, "unsure": 1}, "help": {"no": 1}}));
        let finchley = seat(&report, FINCHLEY);
        assert_eq!((finchley["members"].as_i64(), finchley["opted_out"].as_i64()), (Some(1), Some(1)));
        assert_eq!((finchley["attempts"].as_i64(), finchley["remaining"].as_i64()), (Some(0), Some(0)));
        let totals = &report["totals"];
        assert_eq!(totals["attempts"], 5);
        assert_eq!(totals["contacts"], 4);
        assert_eq!(totals["remaining"], 0);
        assert_eq!(totals["answers"]["support"]["no"], 2);
        let live = &report["live"];
        assert_eq!(live["attempts_last_hour"], 1);
        assert_eq!(live["calls_per_minute"].as_f64(), Some(1.0 / 15.0));
        assert!(live["avg_wait_seconds"].is_null(), "one member this hour: no gap yet");

        let weekly = bank.report("?weekly=true").await;
        let weeks = weekly["weeks"].as_array().unwrap();
        assert_eq!(weeks.len(), 2, "{weekly}");
        assert_eq!(weeks[0]["week"], "2026-W50");
        assert_eq!(weeks[0]["starts_at"], "2026-12-07T00:00:00Z");
        assert_eq!(weeks[0]["totals"]["attempts"], 4);
        assert_eq!(weeks[0]["totals"]["contacts"], 3);
        assert_eq!(weeks[0]["totals"]["answers"], json!({"support": {"yes": 1, "no": 1, "unsure": 1}, "help": {"no": 1}}));
        assert_eq!(weeks[0]["seats"].as_array().unwrap().len(), 1, "only seats with activity");
        assert_eq!(weeks[0]["seats"][0]["code"], HENDON);
        assert_eq!(weeks[1]["week"], "2026-W51");
        assert_eq!(weeks[1]["totals"]["attempts"], 1);
        assert_eq!(weeks[1]["totals"]["contacts"], 1);
        assert_eq!(weeks[1]["totals"]["answers"], json!({"support": {"no": 1}}));

        // Bad input is a 4xx with a code, an unknown campaign a 404.
        let r = bank.app.get(&format!("/api/v1/campaigns/{}/report?weekly=maybe", bank.campaign_id)).await;
        assert_eq!((r.status.as_u16(), r.body["error"]["code"].as_str()), (400, Some("invalid_query")));
        assert_eq!(bank.app.get("/api/v1/campaigns/999/report/live").await.status, 404);
        assert_eq!(bank.app.get("/api/v1/campaigns/999/report").await.status, 404);
    }

    async fn contacts_exclude_wrong_numbers_and_count_refusals(store) {
        let bank = bank(store).await;
        let (mut call, doc) = bank.logged_in(1).await;
        // Wrong number (outcome 4 after a short call) and refused (6).
        let dialling = call.press(&doc, "1").await;
        let (menu, _) = call.run_dial(&dialling, "completed", 3).await;
        assert!(menu.said().contains("Other outcomes"), "{}", menu.raw);
        let doc = call.press(&menu, "4").await;
        let dialling = call.press(&doc, "1").await;
        let (menu, _) = call.run_dial(&dialling, "completed", 3).await;
        let doc = call.press(&menu, "6").await;
        assert!(doc.said().contains("Next: "), "{}", doc.raw);
        call.hang_up().await;
        let report = bank.report("").await;
        let totals = &report["totals"];
        assert_eq!(totals["attempts"], 2, "{report}");
        assert_eq!(totals["contacts"], 1, "{report}");
        assert_eq!(totals["reached"], 0, "{report}");
        // The announced member was handed back by the hang-up: still to call.
        assert_eq!(totals["remaining"], 1, "{report}");
    }

    async fn nothing_claimable_tells_the_volunteer_and_ends_the_call_politely(store) {
        let bank = bank(store).await;
        // Only target seats are served, and there are none: nothing is claimable.
        let r = bank
            .app
            .json(
                "PUT",
                &format!("/api/v1/campaigns/{}/targeting", bank.campaign_id),
                json!({"non_targets": "exclude"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let (mut call, doc) = bank.logged_in(1).await;
        assert!(doc.said().contains("nobody to call"), "{}", doc.raw);
        // Silence runs the verbs after the <Gather>: a goodbye, then a hang-up; never
        // dead air or an error.
        let after: Vec<&str> = doc.verbs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(after, ["Gather", "Say", "Hangup"], "{}", doc.raw);
        assert!(doc.verbs[1].text.contains("Goodbye"), "{}", doc.raw);
        call.hang_up().await;
        let report = bank.report("").await;
        assert_eq!(report["totals"]["attempts"], 0);
        assert_eq!(report["live"]["volunteers"]["total"], 0);
        let ended: i64 = sqlx::query_scalar("select count(*) from volunteer_sessions where state = 'ended'")
            .fetch_one(bank.app.store.pool())
            .await
            .unwrap();
        assert_eq!(ended, 1);
    }
}

/// One surveyed member on the database at `url`, then `phonebank report` run as a
/// separate process against it.
async fn cli_prints_the_report(store: Store, url: &str) {
    let bank = bank(store).await;
    let (mut call, doc) = bank.logged_in(1).await;
    let dialling = call.press(&doc, "1").await;
    let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
    let q2 = call.press(&q1, "1").await;
    call.press(&q2, "2").await;
    call.hang_up().await;

    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonebank"))
            .args(["report", "--campaign", &bank.campaign_id.to_string()])
            .args(args)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run phonebank");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, table) = run(&[]);
    assert!(ok, "{table}");
    assert!(
        table.contains("contacts") && table.contains("remaining"),
        "{table}"
    );
    assert!(table.contains("support: yes 1"), "{table}");
    assert!(table.contains("live at"), "{table}");

    let (ok, csv) = run(&["--format", "csv"]);
    assert!(ok, "{csv}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    // The original ten columns first, new ones after, then one per answer option.
    assert_eq!(
        header[..10],
        [
            "code",
            "name",
            "target",
            "weight",
            "members",
            "opted_out",
            "attempts",
            "reached",
            "completed",
            "answers"
        ]
    );
    let totals: Vec<&str> = lines.last().unwrap().split(',').collect();
    let col = |name: &str| {
        totals[header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))]
    };
    assert_eq!(totals[0], "ALL");
    assert_eq!(
        (
            col("attempts"),
            col("contacts"),
            col("support.yes"),
            col("help.no")
        ),
        ("1", "1", "1", "1")
    );
    assert_eq!(col("remaining"), "2", "two Hendon members left");

    let (ok, weekly) = run(&["--weekly", "--format", "csv"]);
    assert!(ok, "{weekly}");
    assert!(
        weekly.starts_with("week,starts_at,code,name,attempts,contacts"),
        "{weekly}"
    );
    assert!(
        weekly.contains("2026-W50,2026-12-07T00:00:00Z,E14001279,Hendon,1,1,1,2"),
        "{weekly}"
    );

    let (ok, json) = run(&["--weekly", "--format", "json"]);
    assert!(ok, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["totals"]["contacts"], 1);
    assert!(
        v["weeks"].as_array().is_some_and(|w| !w.is_empty()),
        "{json}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonebank"))
        .args(["report", "--campaign", "999"])
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_report_sqlite() {
    let path = common::test_dir().join("cli.db");
    let url = format!("sqlite:{}", path.display());
    let store = Store::connect(Some(&url)).await.unwrap();
    cli_prints_the_report(store, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_report_postgres() {
    if let Some((store, url)) = common::postgres_url().await {
        cli_prints_the_report(store, &url).await;
    }
}

/// `phonebank report` in a folder with no database says so and leaves no empty
/// `phonebank.db` behind (it only reads).
#[test]
fn the_report_needs_an_existing_database() {
    let dir = common::test_dir().join("no-db-here");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonebank"))
        .args(["report", "--campaign", "1"])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run phonebank");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!dir.join("phonebank.db").exists());
}
