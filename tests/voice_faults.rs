//! What the carrier and the world do wrong: forged and replayed signatures, malformed,
//! duplicated and reordered webhooks, opt-outs that race the dial, calling hours across
//! the clock changes, and many volunteers claiming at once. Both backends.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::app::campaign_body;
use common::phone::{
    AUTH_TOKEN, CAMPAIGN_NUMBER, Call, Doc, PUBLIC_URL, PhoneBank, VOLUNTEER, members_csv,
    tuesday_evening,
};
use common::{import_members_str, load_seats};
use phonebank::domain::{CallingHours, PhoneNumber, RetryPolicy};
use phonebank::store::Store;
use phonebank::store::calls::{
    AttemptState, ClaimOutcome, ClaimRequest, DialDecision, Finish, RateClock,
};
use phonebank::telephony::signature;
use serde_json::json;

async fn bank(store: Store, n: usize) -> Bank {
    let (csv, members) = members_csv(n, &["Hendon"]);
    Bank {
        bank: PhoneBank::open(store, &csv, &[]).await,
        members,
    }
}

/// A phone bank ready to call with `n` members in Hendon.
struct Bank {
    bank: PhoneBank,
    members: Vec<String>,
}

impl std::ops::Deref for Bank {
    type Target = PhoneBank;
    fn deref(&self) -> &PhoneBank {
        &self.bank
    }
}

impl Bank {
    async fn text(&self, sql: &str) -> Option<String> {
        self.value(sql).await
    }
}

fn incoming(sid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000000".into()),
        ("CallSid", sid.into()),
        ("From", VOLUNTEER.into()),
        ("To", CAMPAIGN_NUMBER.into()),
        ("CallStatus", "ringing".into()),
        ("Direction", "inbound".into()),
    ]
}

fn borrow<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    p.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

both_backends! {
    async fn forged_missing_and_replayed_signatures_are_refused_and_change_nothing(store) {
        let bank = bank(store, 1).await;
        let app = &bank.app;
        let params = incoming("CA00000000000000000000000000000abc");
        let p = borrow(&params);
        let url = format!("{PUBLIC_URL}/webhooks/voice");
        let good = signature::sign(AUTH_TOKEN, &url, &owned(&p));

        assert_eq!(app.webhook_signed("/webhooks/voice", &p, None).await.status, 403);
        let forged = signature::sign("not-the-token", &url, &owned(&p));
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some(&forged)).await.status, 403);
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some("")).await.status, 403);
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some("bm90IGEgc2lnbmF0dXJl")).await.status, 403);
        // A captured signature replayed with other parameters or on another URL.
        let mut tampered = p.clone();
        tampered.push(("Digits", "1234"));
        assert_eq!(app.webhook_signed("/webhooks/voice", &tampered, Some(&good)).await.status, 403);
        assert_eq!(app.webhook_signed("/webhooks/voice/pin", &p, Some(&good)).await.status, 403);
        assert_eq!(app.webhook_signed("/webhooks/voice?cb=1", &p, Some(&good)).await.status, 403);
        assert_eq!(bank.count("select count(*) from volunteer_sessions").await, 0);

        // The genuine request, including the port variant the provider may sign, and an
        // exact redelivery: one session.
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some(&good)).await.status, 200);
        let with_port = signature::sign(AUTH_TOKEN, "https://pb.example.org:443/webhooks/voice", &owned(&p));
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some(&with_port)).await.status, 200);
        assert_eq!(app.webhook_signed("/webhooks/voice", &p, Some(&good)).await.status, 200);
        assert_eq!(bank.count("select count(*) from volunteer_sessions").await, 1);
    }

    async fn malformed_webhooks_get_4xx_or_valid_twiml_and_the_session_goes_on(store) {
        let bank = bank(store, 2).await;
        let app = &bank.app;
        let (mut call, announce) = bank.logged_in(1).await;

        // No CallSid on the entry point.
        let no_sid = incoming("x");
        let mut p = borrow(&no_sid);
        p.retain(|(k, _)| *k != "CallSid");
        let r = app.webhook("/webhooks/voice", &p).await;
        assert_eq!(r.status, 400, "{}", r.text);
        // Unknown calls and nonsense step parameters: valid TwiML, never a 5xx.
        for url in [
            "/webhooks/voice/pin",
            "/webhooks/voice/next",
            "/webhooks/voice/ready?a=999999",
            "/webhooks/voice/answer?a=abc&n=zz",
            "/webhooks/voice/outcome?a=-1&r=99999999999999",
            "/webhooks/voice/dialed?a=1",
            "/webhooks/voice/disposition",
        ] {
            let unknown = incoming("CA0000000000000000000000000000dead");
            let mut p = borrow(&unknown);
            p.push(("Digits", "1"));
            let r = app.webhook(url, &p).await;
            assert_eq!(r.status, 200, "{url}: {}", r.text);
            Doc::parse(&r.text);
        }
        for digits in ["", "abc", "99999999999999999999999", "1#2", "\u{1F600}", "*"] {
            let d = call.post("/webhooks/voice/ready?a=424242", &[("Digits", digits)]).await;
            assert!(d.dial().is_none(), "{digits:?}");
        }
        // Status callbacks missing their fields are acknowledged and ignored.
        let r = app.webhook("/webhooks/voice/member-status?a=nope", &[("CallStatus", "completed")]).await;
        assert_eq!(r.status, 200);
        let r = app.webhook("/webhooks/voice/status", &[]).await;
        assert_eq!(r.status, 200);

        // A huge body and the wrong content type.
        let huge = "x".repeat(200 * 1024);
        let r = app.webhook("/webhooks/voice", &[("CallSid", "CA1"), ("Junk", &huge)]).await;
        assert_eq!(r.status, 413);
        let r = app
            .raw("POST", "/webhooks/voice", "application/json", "{\"CallSid\": \"CA1\"}")
            .await;
        assert_eq!(r.status, 415);

        // The real session is unharmed.
        let dialling = call.press(&announce, "1").await;
        assert!(dialling.dial().is_some(), "{}", dialling.raw);
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let next = call.press(&q1, "2").await;
        assert!(next.said().contains("Saved"), "{}", next.raw);
        assert_eq!(bank.count("select count(*) from answers").await, 1);
    }

    async fn duplicated_and_reordered_callbacks_change_nothing_twice(store) {
        let bank = bank(store, 2).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let dialling = call.press(&announce, "1").await;
        let dial = dialling.dial().unwrap().clone();
        // The same "ready" again (a redelivery): never a second dial.
        let ready = announce.gather().unwrap().attr("action").unwrap().to_owned();
        let again = call.post(&ready, &[("Digits", "1")]).await;
        assert!(again.dial().is_none(), "{}", again.raw);

        let number = dial.children[0].text.clone();
        let callback = dial.children[0].attr("statusCallback").unwrap().to_owned();
        let child = "CA000000000000000000000000000c0001";
        // Out of order, then duplicated: completed first, earlier states after.
        for (status, seq) in [("completed", 3), ("ringing", 1), ("in-progress", 2), ("initiated", 0), ("completed", 3), ("ringing", 1)] {
            let r = call.member_event(&callback, child, &number, status, seq).await;
            assert_eq!(r.status, 200);
        }
        assert_eq!(
            bank.text("select member_status from contact_attempts").await.as_deref(),
            Some("completed")
        );
        let action = dial.attr("action").unwrap().to_owned();
        let params = [("DialCallStatus", "completed"), ("DialCallSid", child), ("DialCallDuration", "50")];
        let q1 = call.post(&action, &params).await;
        let q1 = call.settle(q1).await;
        let dup = call.post(&action, &params).await;
        let dup = call.settle(dup).await;
        assert!(dup.said().contains("Can we count on your vote?"), "{}", dup.raw);

        // The same key press delivered twice: one answer.
        let answer = q1.gather().unwrap().attr("action").unwrap().to_owned();
        let q2 = call.press(&q1, "1").await;
        let replay = call.post(&answer, &[("Digits", "1")]).await;
        let replay = call.settle(replay).await;
        assert!(replay.said().contains("Would you help"), "{}", replay.raw);
        let last = q2.gather().unwrap().attr("action").unwrap().to_owned();
        let next = call.press(&q2, "1").await;
        assert!(next.said().contains("Saved"), "{}", next.raw);
        // Replays after the member is finished: valid TwiML, nothing stored again.
        for _ in 0..2 {
            let d = call.post(&last, &[("Digits", "2")]).await;
            call.settle(d).await;
            let d = call.post(&action, &params).await;
            call.settle(d).await;
        }
        assert_eq!(bank.count("select count(*) from answers").await, 2);
        assert_eq!(bank.count("select count(*) from answers where question_code = 'help' and option_code = 'yes'").await, 1);
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'completed'").await, 1);
        // The second member's lease is this volunteer's only open one.
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'leased'").await, 1);
    }

    async fn an_opt_out_between_claim_and_dial_is_never_dialled(store) {
        let bank = bank(store, 2).await;
        let (mut call, announce) = bank.logged_in(1).await;
        // Which member was announced: the lease says.
        let leased: i64 = bank.count("select member_id from contact_attempts where state = 'leased'").await;
        let phone = bank.text(&format!("select phone from members where id = {leased}")).await.unwrap();
        let r = bank
            .app
            .json("POST", "/api/v1/suppressions", json!({"phone": phone, "reason": "asked by email"}))
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        let after = call.press(&announce, "1").await;
        assert!(after.said().contains("asked not to be contacted"), "{}", after.raw);
        // Moved straight on to the other member, who is dialled.
        let dialling = call.press(&after, "1").await;
        let dialled = &dialling.dial().expect("the other member").children[0].text;
        assert_ne!(dialled, &phone);
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let done = call.press(&q1, "2").await;
        // The suppressed member is never offered again.
        assert!(done.said().contains("nobody to call"), "{}", done.raw);
        for doc in &call.docs {
            for n in doc.verbs.iter().filter(|v| v.name == "Dial").map(|v| &v.children[0].text) {
                assert_ne!(n, &phone, "a suppressed number was dialled");
            }
        }
        call.assert_masked(&bank.members);
    }

    async fn a_member_calling_back_hears_the_campaign_and_can_opt_out(store) {
        let bank = bank(store, 1).await;
        let member = bank.members[0].clone();
        let path = format!("/api/v1/campaigns/{}", bank.campaign_id);
        for (state, expect) in [("active", "may call again"), ("pause", "paused"), ("finish", "finished")] {
            if state != "active" {
                bank.app.json("POST", &format!("{path}/{state}"), json!({})).await;
            }
            let mut call = Call::new(&bank.app, 7, &member);
            let doc = call.start().await;
            assert!(doc.said().contains("Hendon Calls"), "{}", doc.raw);
            assert!(doc.said().contains(expect), "{state}: {}", doc.raw);
            assert!(doc.dial().is_none(), "never routed to a volunteer");
        }
        let mut call = Call::new(&bank.app, 8, &member);
        let doc = call.start().await;
        let done = call.press(&doc, "1").await;
        assert!(done.said().contains("will not contact"), "{}", done.raw);
        assert_eq!(
            bank.count(&format!("select count(*) from suppressions where phone = '{member}'")).await,
            1
        );
    }

    async fn calling_hours_follow_uk_clock_changes_in_2026(store) {
        let bank = bank(store, 1).await;
        // Default hours: weekdays 10:00-20:30, weekends 10:00-18:00, London time.
        let cases = [
            ("2026-03-27T09:30:00Z", false), // Fri, GMT: 09:30
            ("2026-03-27T20:00:00Z", true),  // Fri, GMT: 20:00
            ("2026-03-29T09:30:00Z", true),  // Sun, the change day, BST: 10:30
            ("2026-03-29T17:30:00Z", false), // Sun, BST: 18:30
            ("2026-03-30T09:30:00Z", true),  // Mon, BST: 10:30
            ("2026-03-30T20:00:00Z", false), // Mon, BST: 21:00
            ("2026-10-23T09:30:00Z", true),  // Fri, BST: 10:30
            ("2026-10-23T20:00:00Z", false), // Fri, BST: 21:00
            ("2026-10-25T09:30:00Z", false), // Sun, back to GMT: 09:30
            ("2026-10-25T17:30:00Z", true),  // Sun, GMT: 17:30
            ("2026-10-26T09:30:00Z", false), // Mon, GMT: 09:30
            ("2026-10-26T20:00:00Z", true),  // Mon, GMT: 20:00
        ];
        for (i, (at, open)) in cases.iter().enumerate() {
            bank.clock.set(at.parse().unwrap());
            let (mut call, doc) = bank.logged_in(100 + i as u64).await;
            if *open {
                assert!(doc.said().contains("Next: "), "{at}: {}", doc.raw);
                let bye = call.press(&doc, "0").await;
                assert!(bye.hangs_up());
            } else {
                assert!(doc.said().contains("outside calling hours"), "{at}: {}", doc.raw);
            }
        }
        // Claimed a minute before the end of the evening, dialled a minute after: not dialled.
        bank.clock.set("2026-12-08T20:29:00Z".parse().unwrap());
        let (mut call, doc) = bank.logged_in(200).await;
        assert!(doc.said().contains("Next: "), "{}", doc.raw);
        bank.clock.set("2026-12-08T20:31:00Z".parse().unwrap());
        let late = call.press(&doc, "1").await;
        assert!(late.dial().is_none(), "{}", late.raw);
        assert!(late.said().contains("outside calling hours"), "{}", late.raw);
        assert_eq!(bank.count("select count(*) from contact_attempts where state <> 'released'").await, 0);
    }
}

/// `volunteers` volunteers, each with an open session, claiming and finishing members as
/// fast as they can across `stores` (one per server instance). Returns every member id
/// that was dialled, in order.
async fn claim_race(stores: &[Store], volunteers: usize) -> Vec<i64> {
    let now = tuesday_evening();
    let mut ids = Vec::new();
    for i in 0..volunteers {
        let phone = PhoneNumber::from_e164(&format!("+44113496{:04}", i)).unwrap();
        let v = stores[0]
            .create_volunteer(&format!("Volunteer {i}"), &phone, None, "not-a-real-hash")
            .await
            .unwrap();
        let s = stores[0]
            .open_session(
                &format!("CA{i:032}"),
                phone.as_e164(),
                v.id,
                None,
                now.as_millisecond(),
            )
            .await
            .unwrap();
        ids.push((v.id, s.id));
    }
    let campaign_id: i64 = sqlx::query_scalar("select id from campaigns")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    let hours = Arc::new(CallingHours::default());
    let policy = Arc::new(RetryPolicy::default());
    let mut tasks = Vec::new();
    for (i, (volunteer_id, session_id)) in ids.into_iter().enumerate() {
        let store = stores[i % stores.len()].clone();
        let (hours, policy) = (hours.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            let mut dialled = Vec::new();
            loop {
                let req = ClaimRequest {
                    campaign_id,
                    volunteer_id,
                    session_id,
                    hours: &hours,
                    now,
                    lease_millis: 600_000,
                    rate_clock: RateClock::Request,
                };
                let attempt = match store.claim(&req).await.unwrap() {
                    ClaimOutcome::Claimed(a) => a,
                    ClaimOutcome::Empty => break,
                    ClaimOutcome::OutsideHours => panic!("inside hours"),
                };
                assert_eq!(attempt.state, AttemptState::Leased);
                // A repeated "next" returns the same lease.
                match store.claim(&req).await.unwrap() {
                    ClaimOutcome::Claimed(again) => assert_eq!(again.id, attempt.id),
                    other => panic!("{other:?}"),
                }
                let decision = store
                    .start_dial(attempt.id, &hours, now, 600_000)
                    .await
                    .unwrap();
                assert!(matches!(decision, DialDecision::Dial(_)), "{decision:?}");
                dialled.push(attempt.member_id);
                let child = format!("CA{:032x}", attempt.id);
                store
                    .record_dial_result(attempt.id, "completed", Some(&child), Some(30))
                    .await
                    .unwrap();
                let finished = store
                    .finish_attempt(
                        attempt.id,
                        Finish {
                            disposition: None,
                            opt_out: false,
                        },
                        &policy,
                        now.as_millisecond(),
                    )
                    .await
                    .unwrap();
                assert!(finished);
            }
            dialled
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn race_setup(store: &Store) -> usize {
    load_seats(store).await;
    let mut csv = String::from("member_id,name,phone,constituency\n");
    let seats = [
        "Hendon",
        "Bristol Central",
        "Leeds Central and Headingley",
        "Glasgow North",
    ];
    let blocks = ["+447700900", "+442079460", "+441174960", "+441214960"];
    for i in 0..1000 {
        csv.push_str(&format!(
            "M{i:05},Member {i},{}{:03},{}\n",
            blocks[i / 250],
            i % 250,
            seats[i % seats.len()]
        ));
    }
    let report = import_members_str(store, &csv).await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let spec = phonebank::store::campaigns::CampaignSpec {
        name: "Race".into(),
        caller_number: PhoneNumber::from_e164(CAMPAIGN_NUMBER).unwrap(),
        script: serde_json::from_value(campaign_body("Race")["script"].clone()).unwrap(),
        calling_hours: CallingHours::default(),
        retry_policy: RetryPolicy::default(),
    };
    let c = store.create_campaign(&spec).await.unwrap();
    // Fifty opted out before the evening: never claimed.
    for i in 0..50 {
        let p = PhoneNumber::from_e164(&format!("+44207946{:04}", i)).unwrap();
        store
            .suppress(&p, "test", "organiser", "test")
            .await
            .unwrap();
    }
    store
        .set_campaign_status(c.id, phonebank::domain::CampaignStatus::Active)
        .await
        .unwrap();
    950
}

fn assert_distinct(dialled: &[i64], eligible: usize) {
    let distinct: HashSet<_> = dialled.iter().collect();
    assert_eq!(distinct.len(), dialled.len(), "a member was dialled twice");
    assert_eq!(dialled.len(), eligible, "every eligible member, once");
}

both_backends! {
    async fn two_hundred_volunteers_claim_a_thousand_members_without_a_duplicate(store) {
        let eligible = race_setup(&store).await;
        let dialled = claim_race(std::slice::from_ref(&store), 200).await;
        assert_distinct(&dialled, eligible);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_never_hand_out_one_member_twice() {
    let Some((first, url)) = common::postgres_url().await else {
        return;
    };
    let second = Store::connect(Some(&url)).await.unwrap();
    let eligible = race_setup(&first).await;
    let dialled = claim_race(&[first, second], 200).await;
    assert_distinct(&dialled, eligible);
}

// Keys delivered after the hang-up: the provider sends the last Gather action and the
// call's final status callback at once, and they may be handled in either order.
both_backends! {
    async fn an_opt_out_key_handled_after_the_hang_up_still_suppresses(store) {
        let bank = bank(store, 2).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let dialling = call.press(&announce, "1").await;
        let phone = dialling.dial().unwrap().children[0].text.clone();
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let menu = call.press(&q1, "0").await;
        assert!(menu.said().contains("never to be contacted"), "{}", menu.raw);
        let action = menu.gather().unwrap().attr("action").unwrap().to_owned();
        call.hang_up().await;
        call.post(&action, &[("Digits", "0")]).await;
        let suppressed = bank
            .count(&format!("select count(*) from suppressions where phone = '{phone}'"))
            .await;
        assert_eq!(suppressed, 1, "the opt-out key was delivered; the number must be suppressed");
        // The member is out of the queue too.
        let ready = bank
            .count(&format!("select count(*) from call_queue where phone = '{phone}' and state = 'ready'"))
            .await;
        assert_eq!(ready, 0);
    }

    async fn an_answer_handled_after_the_hang_up_is_stored_once(store) {
        let bank = bank(store, 2).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let dialling = call.press(&announce, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let q2 = call.press(&q1, "1").await;
        let action = q2.gather().unwrap().attr("action").unwrap().to_owned();
        call.hang_up().await;
        call.post(&action, &[("Digits", "1")]).await;
        // Delivered twice: still one answer.
        call.post(&action, &[("Digits", "1")]).await;
        let answers = bank.count("select count(*) from answers").await;
        assert_eq!(answers, 2, "both keyed answers are stored, each once");
    }

    async fn a_keyed_opt_out_suppresses_the_number_dialled_after_a_reimport(store) {
        let bank = bank(store, 2).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let leased = bank.count("select member_id from contact_attempts where state = 'leased'").await;
        let ext = bank.text(&format!("select external_id from members where id = {leased}")).await.unwrap();
        let idx: usize = ext[1..].parse().unwrap();
        let new_phone = "+447700900777".to_owned();
        let mut csv = String::from("member_id,name,phone,constituency\n");
        for (i, phone) in bank.members.iter().enumerate() {
            let phone = if i == idx { &new_phone } else { phone };
            csv.push_str(&format!("M{i:04},Member {i},{phone},Hendon\n"));
        }
        assert_eq!(import_members_str(&bank.app.store, &csv).await.updated, 1);
        let dialling = call.press(&announce, "1").await;
        assert_eq!(dialling.dial().unwrap().children[0].text, new_phone);
        let (q1, _) = call.run_dial(&dialling, "completed", 30).await;
        let menu = call.press(&q1, "0").await;
        let done = call.press(&menu, "0").await;
        assert!(done.said().contains("not be contacted again"), "{}", done.raw);
        let suppressed = bank
            .count(&format!("select count(*) from suppressions where phone = '{new_phone}'"))
            .await;
        assert_eq!(suppressed, 1, "the number that was dialled is the one suppressed");
    }

    // A lost final status callback (the server killed mid-call): the volunteer's next
    // call takes over instead of being told a call is in progress for over an hour.
    async fn a_new_call_takes_over_from_one_whose_hang_up_was_lost(store) {
        let bank = bank(store, 3).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let dialling = call.press(&announce, "1").await;
        assert!(dialling.dial().is_some());
        drop(call);
        bank.clock.set(bank.clock.now() + jiff::SignedDuration::from_mins(2));
        let (_again, doc) = bank.logged_in(2).await;
        assert!(doc.said().contains("Press 1 to call them now"), "{}", doc.raw);
        // The old attempt waits for its member leg's final status, not a volunteer.
        assert_eq!(
            bank.count("select count(*) from contact_attempts where state = 'reconcile'").await,
            1
        );
        let _ = bank.campaign_id;
    }

    async fn silence_at_the_announcement_ends_the_call_after_three_prompts(store) {
        let bank = bank(store, 2).await;
        let (mut call, mut doc) = bank.logged_in(1).await;
        for _ in 0..3 {
            assert!(doc.said().contains("Press 1 to call them now"), "{}", doc.raw);
            doc = call.silence(&doc).await;
        }
        assert!(doc.hangs_up(), "{}", doc.raw);
        // The member goes back to the queue, uncounted.
        assert_eq!(
            bank.count("select count(*) from contact_attempts where state = 'released'").await,
            1
        );
    }
}

// Races, run many times: each iteration is a fresh chance for the interleaving.
both_backends! {
    async fn a_hang_up_racing_the_dial_action_leaves_nothing_open(store) {
        let bank = bank(store, 20).await;
        for i in 0..20u64 {
            let vphone = format!("+4420794606{i:02}");
            let v = bank.app.json("POST", "/api/v1/volunteers", json!({"name": "V", "phone": vphone})).await;
            let pin = v.body["pin"].as_str().unwrap().to_owned();
            let mut call = Call::new(&bank.app, 100 + i, &vphone);
            let d = call.start().await;
            let announce = call.press(&d, &pin).await;
            let dialling = call.press(&announce, "1").await;
            let dial = dialling.dial().cloned().unwrap_or_else(|| panic!("{}", dialling.raw));
            let number = dial.children[0].text.clone();
            let cb = dial.children[0].attr("statusCallback").unwrap().to_owned();
            let child = format!("CA{:032x}", 900_000 + i);
            for (seq, st) in ["initiated", "ringing", "in-progress", "completed"].iter().enumerate() {
                call.member_event(&cb, &child, &number, st, seq).await;
            }
            let action = dial.attr("action").unwrap().to_owned();
            let sid = call.sid.clone();
            let dialed = [
                ("CallSid", sid.as_str()), ("From", vphone.as_str()), ("To", CAMPAIGN_NUMBER),
                ("CallStatus", "in-progress"), ("DialCallStatus", "completed"),
                ("DialCallSid", child.as_str()), ("DialCallDuration", "40"),
            ];
            let hang = [
                ("CallSid", sid.as_str()), ("From", vphone.as_str()), ("To", CAMPAIGN_NUMBER),
                ("CallStatus", "completed"), ("SequenceNumber", "9"),
            ];
            let (a, b) = tokio::join!(
                bank.app.webhook(&action, &dialed),
                bank.app.webhook("/webhooks/voice/status", &hang)
            );
            assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
            let open = bank.count(
                "select count(*) from contact_attempts a join volunteer_sessions s on s.id = a.session_id \
                 where s.state = 'ended' and a.state in ('leased', 'dialling', 'answered')",
            ).await;
            assert_eq!(open, 0, "iteration {i}: an open attempt on an ended session");
        }
    }

    async fn concurrent_member_status_callbacks_never_regress_a_final_status(store) {
        let bank = bank(store, 30).await;
        let (mut call, mut doc) = bank.logged_in(1).await;
        for i in 0..30u64 {
            let dialling = call.press(&doc, "1").await;
            let dial = dialling.dial().cloned().unwrap_or_else(|| panic!("{}", dialling.raw));
            let number = dial.children[0].text.clone();
            let cb = dial.children[0].attr("statusCallback").unwrap().to_owned();
            let a: i64 = cb.rsplit('=').next().unwrap().parse().unwrap();
            let child = format!("CA{:032x}", 500_000 + i);
            let ringing = [("CallSid", child.as_str()), ("To", number.as_str()), ("CallStatus", "ringing"), ("SequenceNumber", "1")];
            let final_ = [("CallSid", child.as_str()), ("To", number.as_str()), ("CallStatus", "no-answer"), ("SequenceNumber", "2")];
            let (r1, r2) = tokio::join!(bank.app.webhook(&cb, &ringing), bank.app.webhook(&cb, &final_));
            assert_eq!((r1.status.as_u16(), r2.status.as_u16()), (200, 200));
            let status = bank.text(&format!("select member_status from contact_attempts where id = {a}")).await;
            assert_eq!(status.as_deref(), Some("no-answer"), "iteration {i}");
            let action = dial.attr("action").unwrap().to_owned();
            let next = call.post(&action, &[("DialCallStatus", "no-answer"), ("DialCallSid", child.as_str()), ("DialCallDuration", "0")]).await;
            doc = call.settle(next).await;
            if !doc.said().contains("Press 1 to call") {
                break;
            }
        }
    }

    async fn a_key_press_racing_the_sweeper_never_dials_a_released_member(store) {
        let bank = bank(store, 40).await;
        for i in 0..20u64 {
            let vphone = format!("+4420794607{i:02}");
            let v = bank.app.json("POST", "/api/v1/volunteers", json!({"name": "V", "phone": vphone})).await;
            let pin = v.body["pin"].as_str().unwrap().to_owned();
            let mut call = Call::new(&bank.app, 300 + i, &vphone);
            let d = call.start().await;
            let announce = call.press(&d, &pin).await;
            let ready = announce.gather().unwrap().attr("action").unwrap().to_owned();
            let a: i64 = ready.rsplit('=').next().unwrap().parse().unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "update contact_attempts set lease_expires_at = 0 where id = {a}"
            )))
            .execute(bank.app.store.pool())
            .await
            .unwrap();
            let now = bank.clock.now().as_millisecond();
            let params = [
                ("CallSid", call.sid.as_str()), ("From", vphone.as_str()), ("To", CAMPAIGN_NUMBER),
                ("CallStatus", "in-progress"), ("Digits", "1"),
            ];
            let (reply, _) = tokio::join!(
                bank.app.webhook(&ready, &params),
                bank.app.store.sweep_attempts(|_| Some(RetryPolicy::default()), now)
            );
            let doc = Doc::parse(&reply.text);
            let state = bank.text(&format!("select state from contact_attempts where id = {a}")).await.unwrap();
            assert!(
                !(doc.dial().is_some() && state == "released"),
                "iteration {i}: dialled a member whose lease was released"
            );
            call.hang_up().await;
        }
    }
}
